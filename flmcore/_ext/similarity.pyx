# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Batched closed-form weighted 2-D similarity alignment (Cython + OpenMP).

Called by :mod:`flmcore.procrustes` only.  Plain arrays in, plain arrays out,
no validation: the caller has replaced missing (NaN) points by 0 and given them
weight 0, and checked every shape and size.

For each batch item ``b`` the kernel finds ``s, R, t`` minimising
``sum_i w_i |s R x_i + t - y_i|^2`` (Umeyama 1991 in 2-D).  With the weighted
centroids removed and ``M = sum_i w_i y_i x_i^T`` the optimum rotation has
``(cos, sin)`` proportional to ``(M00 + M11, M10 - M01)``; the optimum
reflection ``[[c, s], [s, -c]]`` has ``(c, s)`` proportional to
``(M00 - M11, M01 + M10)``.  The optimum scale is ``|.| / sum_i w_i |x_i|^2``.
No SVD, no iteration; every item is independent, so the result does not
depend on the number of threads.
"""
from cython.parallel import prange

from libc.math cimport sqrt, NAN

import numpy as np


cdef inline int _identity(double* out, int status) noexcept nogil:
    """Write the identity transform (s = 1, R = I, t = 0) for an item that cannot be fitted."""
    out[0] = 1.0
    out[1] = 1.0
    out[2] = 0.0
    out[3] = 0.0
    out[4] = 1.0
    out[5] = 0.0
    out[6] = 0.0
    return status


cdef inline int _fit_one(const double* x, const double* y, const double* w, Py_ssize_t P,
                         bint scale, bint reflection, double* out) noexcept nogil:
    """Fit one item (x, y: P*2 contiguous); out = [s, r00, r01, r10, r11, t0, t1] (identity on failure). Returns a status code."""
    cdef Py_ssize_t i
    cdef double sw = 0.0, mx0 = 0.0, mx1 = 0.0, my0 = 0.0, my1 = 0.0
    cdef double wi, ax0, ax1, ay0, ay1
    cdef double sxx = 0.0, syy = 0.0, rawx = 0.0, rawy = 0.0
    cdef double m00 = 0.0, m01 = 0.0, m10 = 0.0, m11 = 0.0
    cdef double p, q, mp, pr, qr, mr, c, sn, s, r00, r01, r10, r11
    cdef int nvalid = 0
    cdef double x0, x1, y0, y1
    # branch-free accumulation: missing points are zero-filled with weight 0
    for i in range(P):
        wi = w[i]
        nvalid = nvalid + (wi > 0.0)
        sw = sw + wi
        mx0 = mx0 + wi * x[2 * i]
        mx1 = mx1 + wi * x[2 * i + 1]
        my0 = my0 + wi * y[2 * i]
        my1 = my1 + wi * y[2 * i + 1]
    if nvalid < 2:
        return _identity(out, 1)
    mx0 = mx0 / sw
    mx1 = mx1 / sw
    my0 = my0 / sw
    my1 = my1 / sw
    for i in range(P):
        wi = w[i]
        x0 = x[2 * i]
        x1 = x[2 * i + 1]
        y0 = y[2 * i]
        y1 = y[2 * i + 1]
        ax0 = x0 - mx0
        ax1 = x1 - mx1
        ay0 = y0 - my0
        ay1 = y1 - my1
        sxx = sxx + wi * (ax0 * ax0 + ax1 * ax1)
        syy = syy + wi * (ay0 * ay0 + ay1 * ay1)
        rawx = rawx + wi * (x0 * x0 + x1 * x1)
        rawy = rawy + wi * (y0 * y0 + y1 * y1)
        m00 = m00 + wi * ay0 * ax0
        m01 = m01 + wi * ay0 * ax1
        m10 = m10 + wi * ay1 * ax0
        m11 = m11 + wi * ay1 * ax1
    # degenerate: spread below 1e-12 of the coordinate magnitude (all points equal)
    if not (sxx > 1e-24 * rawx) or sxx <= 0.0:
        return _identity(out, 2)
    if not (syy > 1e-24 * rawy) or syy <= 0.0:
        return _identity(out, 3)
    p = m00 + m11
    q = m10 - m01
    mp = sqrt(p * p + q * q)
    pr = m00 - m11
    qr = m01 + m10
    mr = sqrt(pr * pr + qr * qr)
    if reflection and mr > mp:
        c = pr / mr
        sn = qr / mr
        r00 = c
        r01 = sn
        r10 = sn
        r11 = -c
        s = mr / sxx
    else:
        if mp > 0.0:
            c = p / mp
            sn = q / mp
        else:
            c = 1.0
            sn = 0.0
        r00 = c
        r01 = -sn
        r10 = sn
        r11 = c
        s = mp / sxx
    if not scale:
        s = 1.0
    out[0] = s
    out[1] = r00
    out[2] = r01
    out[3] = r10
    out[4] = r11
    out[5] = my0 - s * (r00 * mx0 + r01 * mx1)
    out[6] = my1 - s * (r10 * mx0 + r11 * mx1)
    return 0


def similarity_fit(const double[:, :, ::1] src, const double[:, :, ::1] dst, const double[:, ::1] w,
                   bint scale, bint reflection, double[:, ::1] params, double[:, :, ::1] aligned,
                   signed char[::1] status, int num_threads):
    """Fit and apply a similarity per batch item.

    Parameters
    ----------
    src : (B, P, 2) float64, missing points zero-filled
    dst : (Bd, P, 2) float64 with Bd == B or Bd == 1 (one target for all)
    w : (Bw, P) float64 >= 0 with Bw == B or Bw == 1
    scale, reflection : allow scaling / reflections
    params : (B, 7) output ``[s, r00, r01, r10, r11, t0, t1]``
    aligned : (B, P, 2) output ``s R src + t`` (or shape (0, 0, 2) to skip)
    status : (B,) output int8: 0 ok, 1 fewer than 2 weighted points,
        2 source degenerate (all weighted points equal), 3 target degenerate
    num_threads : OpenMP threads (>= 1)
    """
    cdef Py_ssize_t B = src.shape[0]
    cdef Py_ssize_t P = src.shape[1]
    cdef Py_ssize_t Bd = dst.shape[0]
    cdef Py_ssize_t Bw = w.shape[0]
    cdef bint do_apply = aligned.shape[0] == B
    cdef Py_ssize_t b, i, bd, bw
    cdef int st
    cdef double s, r00, r01, r10, r11, t0, t1, x0, x1
    for b in prange(B, nogil=True, num_threads=num_threads, schedule="static"):
        bd = b if Bd > 1 else 0
        bw = b if Bw > 1 else 0
        st = _fit_one(&src[b, 0, 0], &dst[bd, 0, 0], &w[bw, 0], P, scale, reflection, &params[b, 0])
        status[b] = <signed char> st
        if do_apply:
            s = params[b, 0]
            r00 = s * params[b, 1]
            r01 = s * params[b, 2]
            r10 = s * params[b, 3]
            r11 = s * params[b, 4]
            t0 = params[b, 5]
            t1 = params[b, 6]
            for i in range(P):
                x0 = src[b, i, 0]
                x1 = src[b, i, 1]
                aligned[b, i, 0] = r00 * x0 + r01 * x1 + t0
                aligned[b, i, 1] = r10 * x0 + r11 * x1 + t1


cdef enum:
    CHUNK = 128


cdef void _reduce_chunks(double[:, :, ::1] acc, double[:, ::1] out) noexcept nogil:
    """Sum the per-chunk ``(sum w x, sum w y, sum w)`` in chunk order (thread-count independent) into
    the weighted mean per point; NaN where no shape has the point."""
    cdef Py_ssize_t i, c
    cdef double s0, s1, sw
    for i in range(acc.shape[1]):
        s0 = 0.0
        s1 = 0.0
        sw = 0.0
        for c in range(acc.shape[0]):
            s0 = s0 + acc[c, i, 0]
            s1 = s1 + acc[c, i, 1]
            sw = sw + acc[c, i, 2]
        if sw > 0.0:
            out[i, 0] = s0 / sw
            out[i, 1] = s1 / sw
        else:
            out[i, 0] = NAN
            out[i, 1] = NAN


def weighted_point_mean(const double[:, :, ::1] shapes, const double[:, ::1] w, double[:, ::1] out,
                        int num_threads):
    """Per-point weighted mean over the batch: ``out[i] = sum_b w[b,i] x[b,i] / sum_b w[b,i]``.

    Partial sums over fixed chunks of 128 shapes run in parallel, then the
    chunks are added in order, so the result does not depend on the thread
    count. ``w`` is ``(B, P)`` or ``(1, P)`` (shared weights); points with
    zero total weight get NaN.
    """
    cdef Py_ssize_t B = shapes.shape[0]
    cdef Py_ssize_t P = shapes.shape[1]
    cdef Py_ssize_t Bw = w.shape[0]
    cdef Py_ssize_t nchunk = (B + CHUNK - 1) // CHUNK
    cdef double[:, :, ::1] acc = np.zeros((nchunk, P, 3))
    cdef Py_ssize_t c, b, i, b0, b1, bw
    cdef double wi
    for c in prange(nchunk, nogil=True, num_threads=num_threads, schedule="static"):
        b0 = c * CHUNK
        b1 = b0 + CHUNK
        if b1 > B:
            b1 = B
        for b in range(b0, b1):
            bw = b if Bw > 1 else 0
            for i in range(P):
                wi = w[bw, i]
                acc[c, i, 0] += wi * shapes[b, i, 0]
                acc[c, i, 1] += wi * shapes[b, i, 1]
                acc[c, i, 2] += wi
    _reduce_chunks(acc, out)


def shape_moments(const double[:, :, ::1] shapes, const double[:, ::1] w, double[:, ::1] out, int num_threads):
    """Per shape: ``out[b] = [sum_i w, centroid x, centroid y, sum_i w |x_i - c|^2]`` (zero-filled missing)."""
    cdef Py_ssize_t B = shapes.shape[0]
    cdef Py_ssize_t P = shapes.shape[1]
    cdef Py_ssize_t b, i
    cdef double sw, c0, c1, ss, wi, a0, a1
    for b in prange(B, nogil=True, num_threads=num_threads, schedule="static"):
        sw = 0.0
        c0 = 0.0
        c1 = 0.0
        for i in range(P):
            wi = w[b, i]
            sw = sw + wi
            c0 = c0 + wi * shapes[b, i, 0]
            c1 = c1 + wi * shapes[b, i, 1]
        if sw > 0.0:
            c0 = c0 / sw
            c1 = c1 / sw
        ss = 0.0
        for i in range(P):
            wi = w[b, i]
            a0 = shapes[b, i, 0] - c0
            a1 = shapes[b, i, 1] - c1
            ss = ss + wi * (a0 * a0 + a1 * a1)
        out[b, 0] = sw
        out[b, 1] = c0
        out[b, 2] = c1
        out[b, 3] = ss


def similarity_fit_mean(const double[:, :, ::1] src, const double[:, :, ::1] dst, const double[:, ::1] w,
                        bint scale, bint reflection, double[:, ::1] params, signed char[::1] status,
                        double[:, ::1] mean_out, int num_threads):
    """Fit every item to ``dst`` and return the weighted per-point mean of the aligned items.

    Same fit as :func:`similarity_fit`, but the aligned shapes are never
    stored: each chunk of 128 items accumulates ``w * (s R x + t)`` and the
    chunks are added in order (thread-count independent). One GPA iteration
    in one pass. ``mean_out`` (P, 2) gets NaN where the total weight is 0.
    """
    cdef Py_ssize_t B = src.shape[0]
    cdef Py_ssize_t P = src.shape[1]
    cdef Py_ssize_t Bd = dst.shape[0]
    cdef Py_ssize_t Bw = w.shape[0]
    cdef Py_ssize_t nchunk = (B + CHUNK - 1) // CHUNK
    cdef double[:, :, ::1] acc = np.zeros((nchunk, P, 3))
    cdef Py_ssize_t c, b, i, b0, b1, bd, bw
    cdef int st
    cdef double s, r00, r01, r10, r11, t0, t1, x0, x1, wi
    for c in prange(nchunk, nogil=True, num_threads=num_threads, schedule="static"):
        b0 = c * CHUNK
        b1 = b0 + CHUNK
        if b1 > B:
            b1 = B
        for b in range(b0, b1):
            bd = b if Bd > 1 else 0
            bw = b if Bw > 1 else 0
            st = _fit_one(&src[b, 0, 0], &dst[bd, 0, 0], &w[bw, 0], P, scale, reflection, &params[b, 0])
            status[b] = <signed char> st
            s = params[b, 0]
            r00 = s * params[b, 1]
            r01 = s * params[b, 2]
            r10 = s * params[b, 3]
            r11 = s * params[b, 4]
            t0 = params[b, 5]
            t1 = params[b, 6]
            for i in range(P):
                wi = w[bw, i]
                x0 = src[b, i, 0]
                x1 = src[b, i, 1]
                acc[c, i, 0] += wi * (r00 * x0 + r01 * x1 + t0)
                acc[c, i, 1] += wi * (r10 * x0 + r11 * x1 + t1)
                acc[c, i, 2] += wi
    _reduce_chunks(acc, mean_out)
