"""Numba kernels for the batched LARS-lasso path with an L1 budget (used by :mod:`flmcore.ssr`).

All targets share one Gram matrix ``G = X^T X`` and one cross-product
``Xty = X^T Y``; every target runs its own homotopy path in a ``prange`` loop
(one target per iteration, no shared state), so results do not depend on the
number of threads.  The Cholesky factor of the active Gram block is updated
when a variable enters (one triangular solve) and downdated with Givens
rotations when a variable leaves.

Plain arrays in, plain arrays out; no validation (the caller validates).

Status codes returned per target:

* 0 -- stopped on the L1 budget ``tau`` (coefficients interpolated on the segment),
* 1 -- reached the end of the path (all correlations zero: least squares, or the
  end of the lasso path when the system is under-determined),
* 2 -- ``max_iter`` steps done before either.
"""
import numpy as np
from numba import njit, prange

# A variable whose Cholesky pivot satisfies d^2 <= _DEGENERATE * G_jj lies (to
# about 1e-6 relative) in the span of the active variables: it is skipped until
# the next drop changes the active set.
_DEGENERATE = 1e-12
# re-association lets LLVM vectorise the dot products (deterministic for a given build, independent of
# the thread count); no 'nnan'/'ninf': tau = inf must compare correctly
_FM = {"nsz", "arcp", "contract", "reassoc"}


@njit(cache=True, nogil=True, fastmath=_FM)
def _solve_lower(L, k, b, out):
    # forward substitution L[:k, :k] out = b
    for i in range(k):
        s = b[i]
        for m in range(i):
            s -= L[i, m] * out[m]
        out[i] = s / L[i, i]


@njit(cache=True, nogil=True, fastmath=_FM)
def _solve_upper_t(L, k, b, out):
    # backward substitution L[:k, :k]^T out = b
    for i in range(k - 1, -1, -1):
        s = b[i]
        for m in range(i + 1, k):
            s -= L[m, i] * out[m]
        out[i] = s / L[i, i]


@njit(cache=True, nogil=True, fastmath=_FM)
def _chol_delete(L, k, pos):
    # Remove row/column ``pos`` from the factor of a k x k block: delete the row,
    # then rotate column pairs (r, r + 1) to restore the lower-triangular form.
    for i in range(pos, k - 1):
        for m in range(i + 2):
            L[i, m] = L[i + 1, m]
    for r in range(pos, k - 1):
        a = L[r, r]
        b = L[r, r + 1]
        h = np.sqrt(a * a + b * b)
        if h == 0.0:
            continue
        c = a / h
        s = b / h
        for i in range(r, k - 1):
            x = L[i, r]
            y = L[i, r + 1]
            L[i, r] = c * x + s * y
            L[i, r + 1] = -s * x + c * y
        L[r, r + 1] = 0.0
    for m in range(k):
        L[k - 1, m] = 0.0


@njit(cache=True, nogil=True, fastmath=_FM)
def _lars_target(G, xty, tau, positive, max_iter, tol, coef,
                 record, rec_coef, rec_C, rec_l1, rec_active):
    """One target's LARS-lasso path; fills ``coef`` (p,), returns (status, n_steps, n_knots)."""
    p = G.shape[0]
    for j in range(p):
        coef[j] = 0.0
    c = xty.copy()                       # correlations X^T (y - X coef)
    L = np.zeros((p, p))                 # Cholesky factor of G[A, A] (active order)
    GA = np.zeros((p, p))                # GA[j, m] = G[j, active[m]] (contiguous in m)
    active = np.empty(p, np.int64)       # active variables in entry order
    sgn = np.zeros(p)                    # signs of the active variables (by slot)
    in_act = np.zeros(p, np.bool_)
    excluded = np.zeros(p, np.bool_)     # degenerate until the next drop
    rhs = np.empty(p)
    tmp = np.empty(p)
    w = np.empty(p)
    a = np.empty(p)
    prev = np.empty(p)
    k = 0
    C0 = 0.0
    for j in range(p):
        v = c[j] if positive else abs(c[j])
        if v > C0:
            C0 = v
    C = C0
    ctol = tol * C0
    l1 = 0.0
    n_knots = 0
    if record:
        for j in range(p):
            rec_coef[0, j] = 0.0
            rec_active[0, j] = 0
        rec_C[0] = C0
        rec_l1[0] = 0.0
        n_knots = 1
    if tau <= 0.0:
        return 0, 0, n_knots
    if C0 <= 0.0:
        return 1, 0, n_knots
    drop = False
    dropped = -1
    jnext = -1
    n_step = 0
    status = 1
    while True:
        if not drop:
            if k == 0:
                # first variable: the largest (absolute) correlation
                jnext = -1
                vbest = 0.0
                for j in range(p):
                    if excluded[j]:
                        continue
                    v = c[j] if positive else abs(c[j])
                    if v > vbest:
                        vbest = v
                        jnext = j
                if jnext < 0:
                    status = 1
                    break
                C = vbest
            if jnext >= 0:
                # Cholesky update with the entering column
                for m in range(k):
                    rhs[m] = GA[jnext, m]
                _solve_lower(L, k, rhs, tmp)
                d2 = G[jnext, jnext]
                for m in range(k):
                    d2 -= tmp[m] * tmp[m]
                if d2 <= _DEGENERATE * G[jnext, jnext] or G[jnext, jnext] <= 0.0:
                    # in the span of the active set: skip it until the next drop
                    excluded[jnext] = True
                    jnext = -1
                    if k == 0:
                        continue
                else:
                    for m in range(k):
                        L[k, m] = tmp[m]
                    L[k, k] = np.sqrt(d2)
                    active[k] = jnext
                    for j in range(p):
                        GA[j, k] = G[j, jnext]
                    sgn[k] = 1.0 if (positive or c[jnext] >= 0.0) else -1.0
                    in_act[jnext] = True
                    k += 1
        if C <= ctol:
            status = 1
            break
        if n_step >= max_iter:
            status = 2
            break
        # equiangular direction: G_AA w0 = s,  AA = (s^T w0)^(-1/2),  w = AA w0
        for m in range(k):
            rhs[m] = sgn[m]
        _solve_lower(L, k, rhs, tmp)
        _solve_upper_t(L, k, tmp, w)
        ssum = 0.0
        for m in range(k):
            ssum += sgn[m] * w[m]
        if not ssum > 0.0:
            status = 2
            break
        AA = 1.0 / np.sqrt(ssum)
        for m in range(k):
            w[m] *= AA
        # longest step before an inactive variable catches up (or C reaches 0)
        gamma = C / AA
        jnext = -1
        for j in range(p):
            if in_act[j] or excluded[j]:
                a[j] = 0.0
                continue
            s = 0.0
            for m in range(k):
                s += GA[j, m] * w[m]
            a[j] = s
            # a variable dropped at the last knot sits at c_j = +-C: skip that crossing
            skip_plus = j == dropped and c[j] >= 0.0
            skip_minus = j == dropped and c[j] < 0.0
            den = AA - s
            if den > 0.0 and not skip_plus:
                g = (C - c[j]) / den
                if g > 0.0 and g < gamma:
                    gamma = g
                    jnext = j
            if not positive and not skip_minus:
                den = AA + s
                if den > 0.0:
                    g = (C + c[j]) / den
                    if g > 0.0 and g < gamma:
                        gamma = g
                        jnext = j
        # lasso modification: a coefficient reaching zero leaves the active set
        drop = False
        pos = -1
        for m in range(k):
            if w[m] != 0.0:
                z = -coef[active[m]] / w[m]
                if z > 0.0 and z < gamma:
                    gamma = z
                    pos = m
                    drop = True
        # take the step
        for j in range(p):
            prev[j] = coef[j]
        l1_new = 0.0
        for m in range(k):
            coef[active[m]] += gamma * w[m]
        if drop:
            coef[active[pos]] = 0.0
        for m in range(k):
            l1_new += abs(coef[active[m]])
        n_step += 1
        if l1_new >= tau:
            f = (tau - l1) / (l1_new - l1) if l1_new > l1 else 1.0
            for m in range(k):
                j = active[m]
                coef[j] = prev[j] + f * (coef[j] - prev[j])
            status = 0
            if record:
                for j in range(p):
                    rec_coef[n_knots, j] = coef[j]
                    rec_active[n_knots, j] = 1 if in_act[j] else 0
                rec_C[n_knots] = C - f * gamma * AA
                rec_l1[n_knots] = tau
                n_knots += 1
            break
        l1 = l1_new
        for j in range(p):
            if in_act[j]:
                continue
            if excluded[j]:
                s = 0.0
                for m in range(k):
                    s += GA[j, m] * w[m]
                a[j] = s
            c[j] -= gamma * a[j]
        for m in range(k):
            c[active[m]] -= gamma * sgn[m] * AA
        C -= gamma * AA
        dropped = -1
        if drop:
            jd = active[pos]
            _chol_delete(L, k, pos)
            for m in range(pos, k - 1):
                active[m] = active[m + 1]
                sgn[m] = sgn[m + 1]
            for j in range(p):
                for m in range(pos, k - 1):
                    GA[j, m] = GA[j, m + 1]
            k -= 1
            in_act[jd] = False
            dropped = jd
            for j in range(p):
                excluded[j] = False
        if record:
            for j in range(p):
                rec_coef[n_knots, j] = coef[j]
                rec_active[n_knots, j] = 1 if in_act[j] else 0
            rec_C[n_knots] = C
            rec_l1[n_knots] = l1
            n_knots += 1
        if jnext < 0 and not drop:
            # no variable caught up: the step ended at zero correlation (end of the path)
            status = 1
            break
    return status, n_step, n_knots


@njit(cache=True, parallel=True)
def lars_lasso_batch(G, XtY, tau, positive, max_iter, tol, coef, status, n_steps):
    """Solve every target (column of ``XtY`` (p, T)); write ``coef`` (T, p), ``status``, ``n_steps`` (T,)."""
    T = XtY.shape[1]
    dummy2 = np.zeros((1, 1))
    dummy1 = np.zeros(1)
    dummyi = np.zeros((1, 1), np.int8)
    for t in prange(T):
        xty = np.ascontiguousarray(XtY[:, t])
        st, ns, nk = _lars_target(G, xty, tau[t], positive, max_iter, tol, coef[t],
                                  False, dummy2, dummy1, dummy1, dummyi)
        status[t] = st
        n_steps[t] = ns


@njit(cache=True, parallel=True)
def lars_lasso_path_batch(G, XtY, tau, positive, max_iter, tol, coef, status, n_steps,
                          rec_coef, rec_C, rec_l1, rec_active, n_knots):
    """Like :func:`lars_lasso_batch` and record every knot: ``rec_*`` (T, max_iter + 2, ...)."""
    T = XtY.shape[1]
    for t in prange(T):
        xty = np.ascontiguousarray(XtY[:, t])
        st, ns, nk = _lars_target(G, xty, tau[t], positive, max_iter, tol, coef[t],
                                  True, rec_coef[t], rec_C[t], rec_l1[t], rec_active[t])
        status[t] = st
        n_steps[t] = ns
        n_knots[t] = nk
