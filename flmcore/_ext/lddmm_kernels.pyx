# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Fused dense kernels of LDDMM for small point sets (P <= a few hundred).

Every routine loops over the batch in parallel (OpenMP ``prange`` over the
shapes; each shape is handled by one thread in a fixed order, so results do
not depend on the thread count) and over point pairs ``i < j`` once, without
storing the P x P kernel matrix.

Points are grouped in contiguous blocks (one block per curve in the paper's
per-curve mode, one block for a global flow): ``gend[i]`` is the end
(exclusive) of the block of point ``i`` and ``ginv[i] = 1 / sigma**2`` of that
block.  Kernels (``kind``): 0 Gaussian ``exp(-u / s^2)``, 1 Cauchy
``1 / (1 + u / s^2)`` with ``u = |x - y|^2``; both equal 1 at ``u = 0``.

Plain arrays in, plain arrays out; no validation (callers validate).
"""
from cython.parallel cimport prange
from libc.math cimport exp, expf, sqrt

ctypedef fused real:
    float
    double


cdef inline real _k0(int kind, real u, real inv) noexcept nogil:
    if kind == 0:
        if real is float:
            return expf(-u * inv)
        else:
            return exp(-u * inv)
    return 1 / (1 + u * inv)


cdef inline void _k1(int kind, real u, real inv, real* f, real* f1) noexcept nogil:
    cdef real q
    if kind == 0:
        if real is float:
            q = expf(-u * inv)
        else:
            q = exp(-u * inv)
        f[0] = q
        f1[0] = -inv * q
    else:
        q = 1 / (1 + u * inv)
        f[0] = q
        f1[0] = -inv * q * q


cdef inline void _k2(int kind, real u, real inv, real* f, real* f1, real* f2) noexcept nogil:
    cdef real q
    if kind == 0:
        if real is float:
            q = expf(-u * inv)
        else:
            q = exp(-u * inv)
        f[0] = q
        f1[0] = -inv * q
        f2[0] = inv * inv * q
    else:
        q = 1 / (1 + u * inv)
        f[0] = q
        f1[0] = -inv * q * q
        f2[0] = 2 * inv * inv * q * q * q


# ---------------------------------------------------------------- per-shape helpers

cdef void _velocity(const real* x, const real* a, int P, const int* gend, const real* ginv, int kind,
                    real* v) noexcept nogil:
    """v_i = sum_j k(x_i, x_j) a_j over the block of i."""
    cdef int i, j
    cdef real xi0, xi1, ai0, ai1, vi0, vi1, d0, d1, k, inv
    for i in range(2 * P):
        v[i] = a[i]
    for i in range(P):
        xi0 = x[2 * i]
        xi1 = x[2 * i + 1]
        ai0 = a[2 * i]
        ai1 = a[2 * i + 1]
        inv = ginv[i]
        vi0 = 0
        vi1 = 0
        for j in range(i + 1, gend[i]):
            d0 = xi0 - x[2 * j]
            d1 = xi1 - x[2 * j + 1]
            k = _k0(kind, d0 * d0 + d1 * d1, inv)
            vi0 = vi0 + k * a[2 * j]
            vi1 = vi1 + k * a[2 * j + 1]
            v[2 * j] += k * ai0
            v[2 * j + 1] += k * ai1
        v[2 * i] += vi0
        v[2 * i + 1] += vi1


cdef void _velocity_vjp(const real* x, const real* a, const real* lam, int P, const int* gend,
                        const real* ginv, int kind, real h, real* dx, real* ga) noexcept nogil:
    """Adjoint of v = K(x) a with cotangent lam.

    dx_i = sum_j 2 f'_ij (x_i - x_j) (lam_i . a_j + lam_j . a_i)   (written, not accumulated)
    ga_j += h * sum_i k_ij lam_i                                     (accumulated)
    """
    cdef int i, j
    cdef real xi0, xi1, ai0, ai1, li0, li1, gi0, gi1, di0, di1, d0, d1, f, f1, w, inv
    for i in range(2 * P):
        dx[i] = 0
        ga[i] += h * lam[i]
    for i in range(P):
        xi0 = x[2 * i]
        xi1 = x[2 * i + 1]
        ai0 = a[2 * i]
        ai1 = a[2 * i + 1]
        li0 = lam[2 * i]
        li1 = lam[2 * i + 1]
        inv = ginv[i]
        gi0 = 0
        gi1 = 0
        di0 = 0
        di1 = 0
        for j in range(i + 1, gend[i]):
            d0 = xi0 - x[2 * j]
            d1 = xi1 - x[2 * j + 1]
            _k1(kind, d0 * d0 + d1 * d1, inv, &f, &f1)
            w = 2 * f1 * (li0 * a[2 * j] + li1 * a[2 * j + 1] + lam[2 * j] * ai0 + lam[2 * j + 1] * ai1)
            di0 = di0 + w * d0
            di1 = di1 + w * d1
            dx[2 * j] -= w * d0
            dx[2 * j + 1] -= w * d1
            gi0 = gi0 + f * lam[2 * j]
            gi1 = gi1 + f * lam[2 * j + 1]
            ga[2 * j] += h * f * li0
            ga[2 * j + 1] += h * f * li1
        dx[2 * i] += di0
        dx[2 * i + 1] += di1
        ga[2 * i] += h * gi0
        ga[2 * i + 1] += h * gi1


cdef void _ham_field(const real* x, const real* p, int P, const int* gend, const real* ginv, int kind,
                     real* vx, real* vp) noexcept nogil:
    """Hamiltonian field: vx = K p, vp_i = -sum_j 2 f'_ij (x_i - x_j) (p_i . p_j)."""
    cdef int i, j
    cdef real xi0, xi1, pi0, pi1, a0, a1, b0, b1, d0, d1, f, f1, w, inv
    for i in range(2 * P):
        vx[i] = p[i]
        vp[i] = 0
    for i in range(P):
        xi0 = x[2 * i]
        xi1 = x[2 * i + 1]
        pi0 = p[2 * i]
        pi1 = p[2 * i + 1]
        inv = ginv[i]
        a0 = 0
        a1 = 0
        b0 = 0
        b1 = 0
        for j in range(i + 1, gend[i]):
            d0 = xi0 - x[2 * j]
            d1 = xi1 - x[2 * j + 1]
            _k1(kind, d0 * d0 + d1 * d1, inv, &f, &f1)
            a0 = a0 + f * p[2 * j]
            a1 = a1 + f * p[2 * j + 1]
            vx[2 * j] += f * pi0
            vx[2 * j + 1] += f * pi1
            w = -2 * f1 * (pi0 * p[2 * j] + pi1 * p[2 * j + 1])
            b0 = b0 + w * d0
            b1 = b1 + w * d1
            vp[2 * j] -= w * d0
            vp[2 * j + 1] -= w * d1
        vx[2 * i] += a0
        vx[2 * i + 1] += a1
        vp[2 * i] += b0
        vp[2 * i + 1] += b1


cdef void _ham_vjp(const real* x, const real* p, const real* ca, const real* cb, int P, const int* gend,
                   const real* ginv, int kind, real* gx, real* gp) noexcept nogil:
    """VJP of the Hamiltonian field at (x, p) with cotangents (ca on vx, cb on vp); written to gx, gp."""
    cdef int i, j
    cdef real xi0, xi1, pi0, pi1, ai0, ai1, bi0, bi1, d0, d1, f, f1, f2, g, g1, c, e, s, q0, q1
    cdef real sx0, sx1, sp0, sp1, db0, db1, inv
    for i in range(2 * P):
        gx[i] = 0
        gp[i] = ca[i]
    for i in range(P):
        xi0 = x[2 * i]
        xi1 = x[2 * i + 1]
        pi0 = p[2 * i]
        pi1 = p[2 * i + 1]
        ai0 = ca[2 * i]
        ai1 = ca[2 * i + 1]
        bi0 = cb[2 * i]
        bi1 = cb[2 * i + 1]
        inv = ginv[i]
        sx0 = 0
        sx1 = 0
        sp0 = 0
        sp1 = 0
        for j in range(i + 1, gend[i]):
            d0 = xi0 - x[2 * j]
            d1 = xi1 - x[2 * j + 1]
            _k2(kind, d0 * d0 + d1 * d1, inv, &f, &f1, &f2)
            g = -2 * f1
            g1 = -2 * f2
            c = pi0 * p[2 * j] + pi1 * p[2 * j + 1]
            db0 = bi0 - cb[2 * j]
            db1 = bi1 - cb[2 * j + 1]
            e = db0 * d0 + db1 * d1
            s = 2 * f1 * (ai0 * p[2 * j] + ai1 * p[2 * j + 1] + ca[2 * j] * pi0 + ca[2 * j + 1] * pi1) \
                + 2 * g1 * c * e
            q0 = s * d0 + g * c * db0
            q1 = s * d1 + g * c * db1
            sx0 = sx0 + q0
            sx1 = sx1 + q1
            gx[2 * j] -= q0
            gx[2 * j + 1] -= q1
            sp0 = sp0 + f * ca[2 * j] + g * e * p[2 * j]
            sp1 = sp1 + f * ca[2 * j + 1] + g * e * p[2 * j + 1]
            gp[2 * j] += f * ai0 + g * e * pi0
            gp[2 * j + 1] += f * ai1 + g * e * pi1
        gx[2 * i] += sx0
        gx[2 * i + 1] += sx1
        gp[2 * i] += sp0
        gp[2 * i + 1] += sp1


# ---------------------------------------------------------------- batched entry points

def velocity(real[:, :, ::1] x, real[:, :, ::1] a, int[::1] gend, real[::1] ginv, int kind,
             real[:, :, ::1] out, int num_threads):
    """out[b] = K(x[b]) a[b] (block-diagonal kernel matrix)."""
    cdef Py_ssize_t b
    cdef int B = x.shape[0], P = x.shape[1]
    for b in prange(B, nogil=True, num_threads=num_threads, schedule="static"):
        _velocity(&x[b, 0, 0], &a[b, 0, 0], P, &gend[0], &ginv[0], kind, &out[b, 0, 0])


def flow_forward(real[:, :, ::1] x0, real[:, :, :, ::1] mom, int n_steps, int[::1] gend, real[::1] ginv,
                 int kind, real[:, :, :, ::1] traj, real[:, :, ::1] work, int num_threads):
    """Euler flow x_{t+1} = x_t + K(x_t) a_t / T; mom (B, Tm, P, 2) with Tm in {1, T}; traj (B, T+1, P, 2)."""
    cdef Py_ssize_t b
    cdef int t, k, B = x0.shape[0], P = x0.shape[1], Tm = mom.shape[1]
    cdef real h = 1.0 / n_steps
    for b in prange(B, nogil=True, num_threads=num_threads, schedule="static"):
        for k in range(2 * P):
            (&traj[b, 0, 0, 0])[k] = (&x0[b, 0, 0])[k]
        for t in range(n_steps):
            _velocity(&traj[b, t, 0, 0], &mom[b, t if Tm > 1 else 0, 0, 0], P, &gend[0], &ginv[0], kind,
                      &work[b, 0, 0])
            for k in range(2 * P):
                (&traj[b, t + 1, 0, 0])[k] = (&traj[b, t, 0, 0])[k] + h * (&work[b, 0, 0])[k]


def flow_backward(real[:, :, :, ::1] traj, real[:, :, :, ::1] mom, real[:, :, :, ::1] gtraj, int n_steps,
                  int[::1] gend, real[::1] ginv, int kind, real[:, :, ::1] gx0, real[:, :, :, ::1] gmom,
                  real[:, :, :, ::1] work, int num_threads):
    """Adjoint of flow_forward.

    gtraj (B, 1, P, 2) is the gradient of x_T only, or (B, T+1, P, 2) of every state.
    gmom (B, Tm, P, 2) and gx0 (B, P, 2) are written.  work (B, 2, P, 2).
    """
    cdef Py_ssize_t b
    cdef int t, k, tm, B = traj.shape[0], P = traj.shape[2], Tm = mom.shape[1]
    cdef int full = gtraj.shape[1] > 1
    cdef real h = 1.0 / n_steps
    cdef real* lam
    cdef real* dx
    for b in prange(B, nogil=True, num_threads=num_threads, schedule="static"):
        lam = &work[b, 0, 0, 0]
        dx = &work[b, 1, 0, 0]
        for k in range(2 * P):
            lam[k] = (&gtraj[b, n_steps if full else 0, 0, 0])[k]
        for k in range(2 * P * Tm):
            (&gmom[b, 0, 0, 0])[k] = 0
        for t in range(n_steps - 1, -1, -1):
            tm = t if Tm > 1 else 0
            _velocity_vjp(&traj[b, t, 0, 0], &mom[b, tm, 0, 0], lam, P, &gend[0], &ginv[0], kind, h, dx,
                          &gmom[b, tm, 0, 0])
            for k in range(2 * P):
                lam[k] = lam[k] + h * dx[k]
            if full:
                for k in range(2 * P):
                    lam[k] = lam[k] + (&gtraj[b, t, 0, 0])[k]
        for k in range(2 * P):
            (&gx0[b, 0, 0])[k] = lam[k]


def shoot_forward(real[:, :, ::1] x0, real[:, :, ::1] p0, int n_steps, double c, double w1, double w2,
                  int[::1] gend, real[::1] ginv, int kind, real[:, :, :, ::1] trajx, real[:, :, :, ::1] trajp,
                  real[:, :, :, ::1] work, int num_threads):
    """Geodesic shooting; Euler when c == 0 else the 2-stage scheme (c, w1, w2). work (B, 6, P, 2)."""
    cdef Py_ssize_t b
    cdef int t, k, B = x0.shape[0], P = x0.shape[1]
    cdef real h = 1.0 / n_steps
    cdef real* xt
    cdef real* pt
    cdef real* k1x
    cdef real* k1p
    cdef real* yx
    cdef real* yp
    cdef real* k2x
    cdef real* k2p
    for b in prange(B, nogil=True, num_threads=num_threads, schedule="static"):
        k1x = &work[b, 0, 0, 0]
        k1p = &work[b, 1, 0, 0]
        yx = &work[b, 2, 0, 0]
        yp = &work[b, 3, 0, 0]
        k2x = &work[b, 4, 0, 0]
        k2p = &work[b, 5, 0, 0]
        for k in range(2 * P):
            (&trajx[b, 0, 0, 0])[k] = (&x0[b, 0, 0])[k]
            (&trajp[b, 0, 0, 0])[k] = (&p0[b, 0, 0])[k]
        for t in range(n_steps):
            xt = &trajx[b, t, 0, 0]
            pt = &trajp[b, t, 0, 0]
            _ham_field(xt, pt, P, &gend[0], &ginv[0], kind, k1x, k1p)
            if c == 0:
                for k in range(2 * P):
                    (&trajx[b, t + 1, 0, 0])[k] = xt[k] + h * k1x[k]
                    (&trajp[b, t + 1, 0, 0])[k] = pt[k] + h * k1p[k]
            else:
                for k in range(2 * P):
                    yx[k] = xt[k] + c * h * k1x[k]
                    yp[k] = pt[k] + c * h * k1p[k]
                _ham_field(yx, yp, P, &gend[0], &ginv[0], kind, k2x, k2p)
                for k in range(2 * P):
                    (&trajx[b, t + 1, 0, 0])[k] = xt[k] + h * (w1 * k1x[k] + w2 * k2x[k])
                    (&trajp[b, t + 1, 0, 0])[k] = pt[k] + h * (w1 * k1p[k] + w2 * k2p[k])


def shoot_backward(real[:, :, :, ::1] trajx, real[:, :, :, ::1] trajp, real[:, :, :, ::1] gtx,
                   real[:, :, :, ::1] gtp, int n_steps, double c, double w1, double w2, int[::1] gend,
                   real[::1] ginv, int kind, real[:, :, ::1] gx0, real[:, :, ::1] gp0, real[:, :, :, ::1] work,
                   int num_threads):
    """Adjoint of shoot_forward.  gtx/gtp (B, 1, P, 2) (final state) or (B, T+1, P, 2); work (B, 12, P, 2)."""
    cdef Py_ssize_t b
    cdef int t, k, B = trajx.shape[0], P = trajx.shape[2]
    cdef int full = gtx.shape[1] > 1
    cdef real h = 1.0 / n_steps
    cdef real* xt
    cdef real* pt
    cdef real* lx
    cdef real* lp
    cdef real* ux
    cdef real* up
    cdef real* gxa
    cdef real* gpa
    cdef real* k1x
    cdef real* k1p
    cdef real* yx
    cdef real* yp
    for b in prange(B, nogil=True, num_threads=num_threads, schedule="static"):
        lx = &work[b, 0, 0, 0]
        lp = &work[b, 1, 0, 0]
        ux = &work[b, 2, 0, 0]
        up = &work[b, 3, 0, 0]
        gxa = &work[b, 4, 0, 0]
        gpa = &work[b, 5, 0, 0]
        k1x = &work[b, 6, 0, 0]
        k1p = &work[b, 7, 0, 0]
        yx = &work[b, 8, 0, 0]
        yp = &work[b, 9, 0, 0]
        for k in range(2 * P):
            lx[k] = (&gtx[b, n_steps if full else 0, 0, 0])[k]
            lp[k] = (&gtp[b, n_steps if full else 0, 0, 0])[k]
        for t in range(n_steps - 1, -1, -1):
            xt = &trajx[b, t, 0, 0]
            pt = &trajp[b, t, 0, 0]
            if c == 0:
                for k in range(2 * P):
                    ux[k] = h * lx[k]
                    up[k] = h * lp[k]
                _ham_vjp(xt, pt, ux, up, P, &gend[0], &ginv[0], kind, gxa, gpa)
                for k in range(2 * P):
                    lx[k] = lx[k] + gxa[k]
                    lp[k] = lp[k] + gpa[k]
            else:
                _ham_field(xt, pt, P, &gend[0], &ginv[0], kind, k1x, k1p)
                for k in range(2 * P):
                    yx[k] = xt[k] + c * h * k1x[k]
                    yp[k] = pt[k] + c * h * k1p[k]
                    ux[k] = h * w2 * lx[k]
                    up[k] = h * w2 * lp[k]
                # cotangent of the stage state y2 (it reaches y_{t+1} through k2 only)
                _ham_vjp(yx, yp, ux, up, P, &gend[0], &ginv[0], kind, gxa, gpa)
                for k in range(2 * P):
                    ux[k] = h * w1 * lx[k] + c * h * gxa[k]
                    up[k] = h * w1 * lp[k] + c * h * gpa[k]
                    lx[k] = lx[k] + gxa[k]
                    lp[k] = lp[k] + gpa[k]
                _ham_vjp(xt, pt, ux, up, P, &gend[0], &ginv[0], kind, gxa, gpa)
                for k in range(2 * P):
                    lx[k] = lx[k] + gxa[k]
                    lp[k] = lp[k] + gpa[k]
            if full:
                for k in range(2 * P):
                    lx[k] = lx[k] + (&gtx[b, t, 0, 0])[k]
                    lp[k] = lp[k] + (&gtp[b, t, 0, 0])[k]
        for k in range(2 * P):
            (&gx0[b, 0, 0])[k] = lx[k]
            (&gp0[b, 0, 0])[k] = lp[k]


def ham_field(real[:, :, ::1] x, real[:, :, ::1] p, int[::1] gend, real[::1] ginv, int kind,
              real[:, :, ::1] vx, real[:, :, ::1] vp, int num_threads):
    """Batched Hamiltonian field (dx/dt, dp/dt) at (x, p)."""
    cdef Py_ssize_t b
    cdef int B = x.shape[0], P = x.shape[1]
    for b in prange(B, nogil=True, num_threads=num_threads, schedule="static"):
        _ham_field(&x[b, 0, 0], &p[b, 0, 0], P, &gend[0], &ginv[0], kind, &vx[b, 0, 0], &vp[b, 0, 0])


def field_at(real[:, :, ::1] y, int[::1] lo, int[::1] hi, real[::1] yinv, real[:, :, ::1] x,
             real[:, :, ::1] a, int kind, real[:, :, ::1] v, real[:, :, :, ::1] dv, int want_dv,
             int num_threads):
    """Velocity v(y_m) = sum_{lo_m <= j < hi_m} k(y_m, x_j) a_j and (if want_dv) its Jacobian dv (B, M, 2, 2)."""
    cdef Py_ssize_t b
    cdef int m, j, B = y.shape[0], M = y.shape[1]
    cdef real y0, y1, d0, d1, f, f1, s0, s1, j00, j01, j10, j11, inv, a0, a1
    for b in prange(B, nogil=True, num_threads=num_threads, schedule="static"):
        for m in range(M):
            y0 = y[b, m, 0]
            y1 = y[b, m, 1]
            inv = yinv[m]
            s0 = 0
            s1 = 0
            j00 = 0
            j01 = 0
            j10 = 0
            j11 = 0
            for j in range(lo[m], hi[m]):
                d0 = y0 - x[b, j, 0]
                d1 = y1 - x[b, j, 1]
                _k1(kind, d0 * d0 + d1 * d1, inv, &f, &f1)
                a0 = a[b, j, 0]
                a1 = a[b, j, 1]
                s0 = s0 + f * a0
                s1 = s1 + f * a1
                if want_dv:
                    j00 = j00 + 2 * f1 * a0 * d0
                    j01 = j01 + 2 * f1 * a0 * d1
                    j10 = j10 + 2 * f1 * a1 * d0
                    j11 = j11 + 2 * f1 * a1 * d1
            v[b, m, 0] = s0
            v[b, m, 1] = s1
            if want_dv:
                dv[b, m, 0, 0] = j00
                dv[b, m, 0, 1] = j01
                dv[b, m, 1, 0] = j10
                dv[b, m, 1, 1] = j11


# ---------------------------------------------------------------- currents / varifold

cdef inline real _wgt(int vari, real t0, real t1, real s0, real s1, real* gt0, real* gt1, real* gs0,
                      real* gs1) noexcept nogil:
    """Tangent weight w(t, s) and its gradients: t.s (currents) or (t.s)^2/(|t||s|) (varifold)."""
    cdef real dot = t0 * s0 + t1 * s1, nt, ns, q
    if vari == 0:
        gt0[0] = s0
        gt1[0] = s1
        gs0[0] = t0
        gs1[0] = t1
        return dot
    nt = sqrt(t0 * t0 + t1 * t1)
    ns = sqrt(s0 * s0 + s1 * s1)
    if nt == 0 or ns == 0:
        gt0[0] = 0
        gt1[0] = 0
        gs0[0] = 0
        gs1[0] = 0
        return 0
    q = dot / (nt * ns)
    gt0[0] = 2 * q * s0 - q * q * ns * t0 / nt
    gt1[0] = 2 * q * s1 - q * q * ns * t1 / nt
    gs0[0] = 2 * q * t0 - q * q * nt * s0 / ns
    gs1[0] = 2 * q * t1 - q * q * nt * s1 / ns
    return q * dot


cdef real _self_energy(const real* c, const real* t, int N, const int* gend, const real* ginv, int kind, int vari,
                       int grad, real* gc, real* gt) noexcept nogil:
    """sum_{i, j same block} k(c_i, c_j) w(t_i, t_j); gradients written (scaled by 1) when grad."""
    cdef int i, j
    cdef real e = 0, ci0, ci1, ti0, ti1, d0, d1, f, f1, w, a0, a1, b0, b1, q, inv
    cdef real sc0, sc1, st0, st1
    if grad:
        for i in range(2 * N):
            gc[i] = 0
            gt[i] = 0
    for i in range(N):
        ci0 = c[2 * i]
        ci1 = c[2 * i + 1]
        ti0 = t[2 * i]
        ti1 = t[2 * i + 1]
        inv = ginv[i]
        w = _wgt(vari, ti0, ti1, ti0, ti1, &a0, &a1, &b0, &b1)
        e = e + w
        sc0 = 0
        sc1 = 0
        st0 = 0
        st1 = 0
        if grad:
            st0 = a0 + b0
            st1 = a1 + b1
        for j in range(i + 1, gend[i]):
            d0 = ci0 - c[2 * j]
            d1 = ci1 - c[2 * j + 1]
            _k1(kind, d0 * d0 + d1 * d1, inv, &f, &f1)
            w = _wgt(vari, ti0, ti1, t[2 * j], t[2 * j + 1], &a0, &a1, &b0, &b1)
            e = e + 2 * f * w
            if grad:
                q = 4 * f1 * w
                sc0 = sc0 + q * d0
                sc1 = sc1 + q * d1
                gc[2 * j] -= q * d0
                gc[2 * j + 1] -= q * d1
                st0 = st0 + 2 * f * a0
                st1 = st1 + 2 * f * a1
                gt[2 * j] += 2 * f * b0
                gt[2 * j + 1] += 2 * f * b1
        if grad:
            gc[2 * i] += sc0
            gc[2 * i + 1] += sc1
            gt[2 * i] += st0
            gt[2 * i + 1] += st1
    return e


cdef real _cross_energy(const real* ca, const real* ta, int Na, const real* cb, const real* tb, const int* lo,
                        const int* hi, const real* ainv, int kind, int vari, int grad, real scale, real* gca,
                        real* gta, real* gcb, real* gtb) noexcept nogil:
    """sum_i sum_{lo_i <= j < hi_i} k(ca_i, cb_j) w(ta_i, tb_j); gradients times ``scale`` accumulated."""
    cdef int i, j
    cdef real e = 0, ci0, ci1, ti0, ti1, d0, d1, f, f1, w, a0, a1, b0, b1, q, inv
    cdef real sc0, sc1, st0, st1
    for i in range(Na):
        ci0 = ca[2 * i]
        ci1 = ca[2 * i + 1]
        ti0 = ta[2 * i]
        ti1 = ta[2 * i + 1]
        inv = ainv[i]
        sc0 = 0
        sc1 = 0
        st0 = 0
        st1 = 0
        for j in range(lo[i], hi[i]):
            d0 = ci0 - cb[2 * j]
            d1 = ci1 - cb[2 * j + 1]
            _k1(kind, d0 * d0 + d1 * d1, inv, &f, &f1)
            w = _wgt(vari, ti0, ti1, tb[2 * j], tb[2 * j + 1], &a0, &a1, &b0, &b1)
            e = e + f * w
            if grad:
                q = scale * 2 * f1 * w
                sc0 = sc0 + q * d0
                sc1 = sc1 + q * d1
                gcb[2 * j] -= q * d0
                gcb[2 * j + 1] -= q * d1
                st0 = st0 + scale * f * a0
                st1 = st1 + scale * f * a1
                gtb[2 * j] += scale * f * b0
                gtb[2 * j + 1] += scale * f * b1
        if grad:
            gca[2 * i] += sc0
            gca[2 * i + 1] += sc1
            gta[2 * i] += st0
            gta[2 * i + 1] += st1
    return e


def curve_distance(real[:, :, ::1] ca, real[:, :, ::1] ta, real[:, :, ::1] cb, real[:, :, ::1] tb,
                   int[::1] aend, real[::1] ainv, int[::1] bend, real[::1] binv, int[::1] lo, int[::1] hi,
                   int kind, int varifold, int grad, real[::1] out, real[:, :, ::1] gca, real[:, :, ::1] gta,
                   real[:, :, ::1] gcb, real[:, :, ::1] gtb, int num_threads):
    """||mu_a - mu_b||^2_{W*} per shape (currents, or varifold when ``varifold``) and its gradients.

    Segments (centres c, tangents t) of a and b are grouped in matching blocks (aend/bend: end of the
    block of each segment; lo/hi: the block of b paired with each segment of a).
    """
    cdef Py_ssize_t b
    cdef int Na = ca.shape[1], Nb = cb.shape[1], B = ca.shape[0]
    cdef real eaa, ebb, eab
    for b in prange(B, nogil=True, num_threads=num_threads, schedule="static"):
        eaa = _self_energy(&ca[b, 0, 0], &ta[b, 0, 0], Na, &aend[0], &ainv[0], kind, varifold, grad,
                           &gca[b, 0, 0], &gta[b, 0, 0])
        ebb = _self_energy(&cb[b, 0, 0], &tb[b, 0, 0], Nb, &bend[0], &binv[0], kind, varifold, grad,
                           &gcb[b, 0, 0], &gtb[b, 0, 0])
        eab = _cross_energy(&ca[b, 0, 0], &ta[b, 0, 0], Na, &cb[b, 0, 0], &tb[b, 0, 0], &lo[0], &hi[0],
                            &ainv[0], kind, varifold, grad, -2, &gca[b, 0, 0], &gta[b, 0, 0], &gcb[b, 0, 0],
                            &gtb[b, 0, 0])
        out[b] = eaa + ebb - 2 * eab
