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
from libc.math cimport exp, expf

ctypedef fused real:
    float
    double


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


# Hot loops in C: point pairs i < j visited once, each row j > i as a vectorised loop
# (structure-of-arrays scratch, branch-free exp, AVX2/FMA clone dispatched at run time on x86-64 Linux/GCC).
cdef extern from *:
    """
    #include <stddef.h>
    #include <stdlib.h>
    #include <string.h>
    #include <stdint.h>
    #include <math.h>
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && __GNUC__ >= 12
    /* x86-64-v3 = AVX2 + FMA + BMI: the resolver tests CPU features (an "arch=haswell" clone would
       test the CPU model and miss newer CPUs) */
    #define LK_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
    #elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define LK_CLONES __attribute__((target_clones("avx2", "default")))
    #else
    #define LK_CLONES
    #endif
    #if defined(__GNUC__) || defined(__clang__)
    #define LK_INLINE static inline __attribute__((always_inline))
    #else
    #define LK_INLINE static inline
    #endif

    /* exp(x) for x <= 0, branch-free so that loops calling it vectorise: x = n ln2 + r with
       |r| <= ln2 / 2 (round-to-nearest by the 1.5 * 2^52 trick), degree-12 Taylor polynomial of
       exp(r) (relative error < 4e-16), times 2^n built in the exponent bits; 0 below exp(-600). */
    static inline double lk_exp_d(double x0) {
        /* below -600 the result is set to 0 (no denormal products downstream); integer selects, see
           lk_exp_f */
        int64_t xb, cb = (int64_t)0xC082C00000000000LL; /* bits of -600.0 */
        memcpy(&xb, &x0, 8);
        const int64_t m = -(int64_t)(x0 < -600.0); /* all ones below the clamp */
        xb = (xb & ~m) | (cb & m);
        double x;
        memcpy(&x, &xb, 8);
        const double magic = 6755399441055744.0;
        double t = x * 1.4426950408889634 + magic;
        double n = t - magic;
        double r = x - n * 0.6931471803691238 - n * 1.9082149292705877e-10;
        double p = 1.0 / 479001600.0;
        p = p * r + 1.0 / 39916800.0;
        p = p * r + 1.0 / 3628800.0;
        p = p * r + 1.0 / 362880.0;
        p = p * r + 1.0 / 40320.0;
        p = p * r + 1.0 / 5040.0;
        p = p * r + 1.0 / 720.0;
        p = p * r + 1.0 / 120.0;
        p = p * r + 1.0 / 24.0;
        p = p * r + 1.0 / 6.0;
        p = p * r + 0.5;
        p = p * r + 1.0;
        p = p * r + 1.0;
        int64_t ti;
        memcpy(&ti, &t, 8);
        int64_t bits = (ti - (int64_t)0x4338000000000000LL + 1023) << 52;
        bits &= ~m;
        double s;
        memcpy(&s, &bits, 8);
        return p * s;
    }

    /* float version: degree-7 polynomial (relative error ~1e-7), 1.5 * 2^23 rounding trick. */
    static inline float lk_exp_f(float x0) {
        /* below -80 the result is set to 0 (no denormal products downstream).  The clamp and the zeroing
           are bitwise masks on the bit patterns: a select (?:) there is turned
           into control flow (jump threading on the clamped constant) and the calling loops do not vectorise. */
        int32_t xb, cb = (int32_t)0xC2A00000; /* bits of -80.0f */
        memcpy(&xb, &x0, 4);
        const int32_t m = -(int32_t)(x0 < -80.0f); /* all ones below the clamp */
        xb = (xb & ~m) | (cb & m);
        float x;
        memcpy(&x, &xb, 4);
        const float magic = 12582912.0f;
        float t = x * 1.44269504f + magic;
        float n = t - magic;
        float r = x - n * 0.693145751953125f - n * 1.428606765330187e-06f;
        float p = 1.0f / 5040.0f;
        p = p * r + 1.0f / 720.0f;
        p = p * r + 1.0f / 120.0f;
        p = p * r + 1.0f / 24.0f;
        p = p * r + 1.0f / 6.0f;
        p = p * r + 0.5f;
        p = p * r + 1.0f;
        p = p * r + 1.0f;
        int32_t ti;
        memcpy(&ti, &t, 4);
        int32_t bits = (ti - (int32_t)0x4B400000 + 127) << 23;
        bits &= ~m;
        float s;
        memcpy(&s, &bits, 4);
        return p * s;
    }
    /* the kernels, written once in lddmm_kernels_impl.h and instantiated per precision */
    #define REAL double
    #define SFX _d
    #define EXPFN lk_exp_d
    #define SQRT sqrt
    #include "lddmm_kernels_impl.h"
    #define REAL float
    #define SFX _f
    #define EXPFN lk_exp_f
    #define SQRT sqrtf
    #include "lddmm_kernels_impl.h"

    """
    void lk_velocity_d(const double* x, const double* a, int P, const int* gend, const double* ginv, int kind,
                       double* v) nogil
    void lk_velocity_f(const float* x, const float* a, int P, const int* gend, const float* ginv, int kind,
                       float* v) nogil
    void lk_velocity_vjp_d(const double* x, const double* a, const double* lam, int P, const int* gend,
                           const double* ginv, int kind, double h, double* dx, double* ga) nogil
    void lk_velocity_vjp_f(const float* x, const float* a, const float* lam, int P, const int* gend,
                           const float* ginv, int kind, float h, float* dx, float* ga) nogil
    void lk_ham_field_d(const double* x, const double* p, int P, const int* gend, const double* ginv, int kind,
                        double* vx, double* vp) nogil
    void lk_ham_field_f(const float* x, const float* p, int P, const int* gend, const float* ginv, int kind,
                        float* vx, float* vp) nogil
    void lk_ham_vjp_d(const double* x, const double* p, const double* ca, const double* cb, int P,
                      const int* gend, const double* ginv, int kind, double* gx, double* gp) nogil
    void lk_ham_vjp_f(const float* x, const float* p, const float* ca, const float* cb, int P,
                      const int* gend, const float* ginv, int kind, float* gx, float* gp) nogil
    double lk_curve_energy_d(const double* c1, const double* t1, int N1, const double* c2, const double* t2,
                             int N2, const int* lo, const int* hi, const double* inv1, int kind, int vari,
                             int self_, int grad, double scale, double* gc1, double* gt1, double* gc2,
                             double* gt2) nogil
    float lk_curve_energy_f(const float* c1, const float* t1, int N1, const float* c2, const float* t2,
                            int N2, const int* lo, const int* hi, const float* inv1, int kind, int vari,
                            int self_, int grad, float scale, float* gc1, float* gt1, float* gc2,
                            float* gt2) nogil


# ---------------------------------------------------------------- per-shape helpers

cdef inline void _velocity(const real* x, const real* a, int P, const int* gend, const real* ginv, int kind,
                           real* v) noexcept nogil:
    """v_i = sum_j k(x_i, x_j) a_j over the block of i."""
    if real is float:
        lk_velocity_f(x, a, P, gend, ginv, kind, v)
    else:
        lk_velocity_d(x, a, P, gend, ginv, kind, v)


cdef inline void _velocity_vjp(const real* x, const real* a, const real* lam, int P, const int* gend,
                               const real* ginv, int kind, real h, real* dx, real* ga) noexcept nogil:
    """Adjoint of v = K(x) a with cotangent lam.

    dx_i = sum_j 2 f'_ij (x_i - x_j) (lam_i . a_j + lam_j . a_i)   (written, not accumulated)
    ga_j += h * sum_i k_ij lam_i                                     (accumulated)
    """
    if real is float:
        lk_velocity_vjp_f(x, a, lam, P, gend, ginv, kind, h, dx, ga)
    else:
        lk_velocity_vjp_d(x, a, lam, P, gend, ginv, kind, h, dx, ga)


cdef inline void _ham_field(const real* x, const real* p, int P, const int* gend, const real* ginv, int kind,
                            real* vx, real* vp) noexcept nogil:
    """Hamiltonian field: vx = K p, vp_i = -sum_j 2 f'_ij (x_i - x_j) (p_i . p_j)."""
    if real is float:
        lk_ham_field_f(x, p, P, gend, ginv, kind, vx, vp)
    else:
        lk_ham_field_d(x, p, P, gend, ginv, kind, vx, vp)


cdef inline void _ham_vjp(const real* x, const real* p, const real* ca, const real* cb, int P, const int* gend,
                          const real* ginv, int kind, real* gx, real* gp) noexcept nogil:
    """VJP of the Hamiltonian field at (x, p) with cotangents (ca on vx, cb on vp); written to gx, gp."""
    if real is float:
        lk_ham_vjp_f(x, p, ca, cb, P, gend, ginv, kind, gx, gp)
    else:
        lk_ham_vjp_d(x, p, ca, cb, P, gend, ginv, kind, gx, gp)


# ---------------------------------------------------------------- batched entry points

def velocity(const real[:, :, ::1] x, const real[:, :, ::1] a, const int[::1] gend, const real[::1] ginv, int kind,
             real[:, :, ::1] out, int num_threads):
    """out[b] = K(x[b]) a[b] (block-diagonal kernel matrix)."""
    cdef Py_ssize_t b
    cdef int B = x.shape[0], P = x.shape[1]
    for b in prange(B, nogil=True, num_threads=num_threads, schedule="static"):
        _velocity(&x[b, 0, 0], &a[b, 0, 0], P, &gend[0], &ginv[0], kind, &out[b, 0, 0])


def flow_forward(const real[:, :, ::1] x0, const real[:, :, :, ::1] mom, int n_steps, const int[::1] gend,
                 const real[::1] ginv, int kind, real[:, :, :, ::1] traj, real[:, :, ::1] work, int num_threads):
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


def flow_backward(const real[:, :, :, ::1] traj, const real[:, :, :, ::1] mom, const real[:, :, :, ::1] gtraj,
                  int n_steps, const int[::1] gend, const real[::1] ginv, int kind, real[:, :, ::1] gx0,
                  real[:, :, :, ::1] gmom,
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


def shoot_forward(const real[:, :, ::1] x0, const real[:, :, ::1] p0, int n_steps, double c, double w1, double w2,
                  const int[::1] gend, const real[::1] ginv, int kind, real[:, :, :, ::1] trajx,
                  real[:, :, :, ::1] trajp,
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


def shoot_backward(const real[:, :, :, ::1] trajx, const real[:, :, :, ::1] trajp, const real[:, :, :, ::1] gtx,
                   const real[:, :, :, ::1] gtp, int n_steps, double c, double w1, double w2, const int[::1] gend,
                   const real[::1] ginv, int kind, real[:, :, ::1] gx0, real[:, :, ::1] gp0, real[:, :, :, ::1] work,
                   int num_threads):
    """Adjoint of shoot_forward.  gtx/gtp (B, 1, P, 2) (final state) or (B, T+1, P, 2); work (B, 12, P, 2)."""
    cdef Py_ssize_t b
    cdef int t, k, B = trajx.shape[0], P = trajx.shape[2]
    cdef int full = gtx.shape[1] > 1
    cdef real h = 1.0 / n_steps
    cdef const real* xt
    cdef const real* pt
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


def ham_field(const real[:, :, ::1] x, const real[:, :, ::1] p, const int[::1] gend, const real[::1] ginv, int kind,
              real[:, :, ::1] vx, real[:, :, ::1] vp, int num_threads):
    """Batched Hamiltonian field (dx/dt, dp/dt) at (x, p)."""
    cdef Py_ssize_t b
    cdef int B = x.shape[0], P = x.shape[1]
    for b in prange(B, nogil=True, num_threads=num_threads, schedule="static"):
        _ham_field(&x[b, 0, 0], &p[b, 0, 0], P, &gend[0], &ginv[0], kind, &vx[b, 0, 0], &vp[b, 0, 0])


def field_at(const real[:, :, ::1] y, const int[::1] lo, const int[::1] hi, const real[::1] yinv,
             const real[:, :, ::1] x, const real[:, :, ::1] a, int kind, real[:, :, ::1] v, real[:, :, :, ::1] dv,
             int want_dv,
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

cdef inline real _energy(const real* c1, const real* t1, int N1, const real* c2, const real* t2, int N2,
                        const int* lo, const int* hi, const real* inv1, int kind, int vari, int self_, int grad,
                        real scale, real* gc1, real* gt1, real* gc2, real* gt2) noexcept nogil:
    if real is float:
        return lk_curve_energy_f(c1, t1, N1, c2, t2, N2, lo, hi, inv1, kind, vari, self_, grad, scale, gc1, gt1,
                                 gc2, gt2)
    else:
        return lk_curve_energy_d(c1, t1, N1, c2, t2, N2, lo, hi, inv1, kind, vari, self_, grad, scale, gc1, gt1,
                                 gc2, gt2)


def curve_distance(const real[:, :, ::1] ca, const real[:, :, ::1] ta, const real[:, :, ::1] cb,
                   const real[:, :, ::1] tb, const int[::1] aend, const real[::1] ainv, const int[::1] bend,
                   const real[::1] binv, const int[::1] lo, const int[::1] hi,
                   int kind, int varifold, int grad, real[::1] out, real[:, :, ::1] gca, real[:, :, ::1] gta,
                   real[:, :, ::1] gcb, real[:, :, ::1] gtb, int num_threads):
    """||mu_a - mu_b||^2_{W*} per shape (currents, or varifold when ``varifold``) and its gradients.

    Segments (centres c, tangents t) of a and b are grouped in matching blocks (aend/bend: end of the
    block of each segment; lo/hi: the block of b paired with each segment of a).
    """
    cdef Py_ssize_t b
    cdef int Na = ca.shape[1], Nb = cb.shape[1], B = ca.shape[0]
    cdef real eaa, ebb, eab
    cdef int k
    for b in prange(B, nogil=True, num_threads=num_threads, schedule="static"):
        if grad:
            for k in range(2 * Na):
                gca[b, k // 2, k % 2] = 0
                gta[b, k // 2, k % 2] = 0
            for k in range(2 * Nb):
                gcb[b, k // 2, k % 2] = 0
                gtb[b, k // 2, k % 2] = 0
        eaa = _energy(&ca[b, 0, 0], &ta[b, 0, 0], Na, &ca[b, 0, 0], &ta[b, 0, 0], Na, &lo[0], &aend[0], &ainv[0],
                      kind, varifold, 1, grad, 1, &gca[b, 0, 0], &gta[b, 0, 0], &gca[b, 0, 0], &gta[b, 0, 0])
        ebb = _energy(&cb[b, 0, 0], &tb[b, 0, 0], Nb, &cb[b, 0, 0], &tb[b, 0, 0], Nb, &lo[0], &bend[0], &binv[0],
                      kind, varifold, 1, grad, 1, &gcb[b, 0, 0], &gtb[b, 0, 0], &gcb[b, 0, 0], &gtb[b, 0, 0])
        eab = _energy(&ca[b, 0, 0], &ta[b, 0, 0], Na, &cb[b, 0, 0], &tb[b, 0, 0], Nb, &lo[0], &hi[0], &ainv[0],
                      kind, varifold, 0, grad, -2, &gca[b, 0, 0], &gta[b, 0, 0], &gcb[b, 0, 0], &gtb[b, 0, 0])
        out[b] = eaa + ebb - 2 * eab
