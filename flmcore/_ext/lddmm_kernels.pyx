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
        /* below -600 the result is set to 0 (no denormal products downstream) */
        double x = x0 < -600.0 ? -600.0 : x0;
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
        double s;
        memcpy(&s, &bits, 8);
        return x0 < -600.0 ? 0.0 : p * s;
    }

    /* float version: degree-7 polynomial (relative error ~1e-7), 1.5 * 2^23 rounding trick. */
    static inline float lk_exp_f(float x0) {
        /* below -80 the result is set to 0 (no denormal products downstream) */
        float x = x0 < -80.0f ? -80.0f : x0;
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
        float s;
        memcpy(&s, &bits, 4);
        return x0 < -80.0f ? 0.0f : p * s;
    }
    /* ---- REAL = double ---- */
    static inline double lk_kval_d(double u, double inv, int kind) {
        return kind == 0 ? lk_exp_d(-u * inv) : 1.0 / (1.0 + u * inv);
    }
    static inline double lk_k1_d(double f, double inv, int kind) { return kind == 0 ? -inv * f : -inv * f * f; }
    static inline double lk_k2_d(double f, double inv, int kind) {
        return kind == 0 ? inv * inv * f : 2.0 * inv * inv * f * f * f;
    }

    LK_INLINE void lk_velocity_d_k(const double* x, const double* a, int P, const int* gend, const double* ginv,
                                        const int kind, double* v) {
        double* buf = (double*)malloc(sizeof(double) * 6 * (size_t)P);
        double *X = buf, *Y = buf + P, *AX = buf + 2 * P, *AY = buf + 3 * P, *VX = buf + 4 * P, *VY = buf + 5 * P;
        for (int i = 0; i < P; i++) {
            X[i] = x[2 * i]; Y[i] = x[2 * i + 1]; AX[i] = a[2 * i]; AY[i] = a[2 * i + 1];
            VX[i] = AX[i]; VY[i] = AY[i];
        }
        for (int i = 0; i < P; i++) {
            const double xi = X[i], yi = Y[i], ai0 = AX[i], ai1 = AY[i], inv = ginv[i];
            double s0 = 0, s1 = 0;
            const int e = gend[i];
            #pragma omp simd reduction(+:s0,s1)
            for (int j = i + 1; j < e; j++) {
                double d0 = xi - X[j], d1 = yi - Y[j];
                double k = lk_kval_d(d0 * d0 + d1 * d1, inv, kind);
                s0 += k * AX[j]; s1 += k * AY[j];
                VX[j] += k * ai0; VY[j] += k * ai1;
            }
            VX[i] += s0; VY[i] += s1;
        }
        for (int i = 0; i < P; i++) { v[2 * i] = VX[i]; v[2 * i + 1] = VY[i]; }
        free(buf);
    }
    /* kernel choice hoisted out of the loops: one specialised copy per kernel */
    LK_CLONES static void lk_velocity_d(const double* x, const double* a, int P, const int* gend, const double* ginv,
                                        int kind, double* v) {
        if (kind == 0) { lk_velocity_d_k(x, a, P, gend, ginv, 0, v); }
        else { lk_velocity_d_k(x, a, P, gend, ginv, 1, v); }
    }

    LK_INLINE void lk_velocity_vjp_d_k(const double* x, const double* a, const double* lam, int P, const int* gend,
                                            const double* ginv, const int kind, double h, double* dx, double* ga) {
        double* buf = (double*)malloc(sizeof(double) * 10 * (size_t)P);
        double *X = buf, *Y = buf + P, *AX = buf + 2 * P, *AY = buf + 3 * P, *LX = buf + 4 * P, *LY = buf + 5 * P;
        double *DX = buf + 6 * P, *DY = buf + 7 * P, *GX = buf + 8 * P, *GY = buf + 9 * P;
        for (int i = 0; i < P; i++) {
            X[i] = x[2 * i]; Y[i] = x[2 * i + 1]; AX[i] = a[2 * i]; AY[i] = a[2 * i + 1];
            LX[i] = lam[2 * i]; LY[i] = lam[2 * i + 1];
            DX[i] = 0; DY[i] = 0; GX[i] = h * LX[i]; GY[i] = h * LY[i];
        }
        for (int i = 0; i < P; i++) {
            const double xi = X[i], yi = Y[i], ai0 = AX[i], ai1 = AY[i], li0 = LX[i], li1 = LY[i], inv = ginv[i];
            const double hl0 = h * li0, hl1 = h * li1;
            double di0 = 0, di1 = 0, gi0 = 0, gi1 = 0;
            const int e = gend[i];
            #pragma omp simd reduction(+:di0,di1,gi0,gi1)
            for (int j = i + 1; j < e; j++) {
                double d0 = xi - X[j], d1 = yi - Y[j];
                double f = lk_kval_d(d0 * d0 + d1 * d1, inv, kind);
                double f1 = lk_k1_d(f, inv, kind);
                double w = 2 * f1 * (li0 * AX[j] + li1 * AY[j] + LX[j] * ai0 + LY[j] * ai1);
                di0 += w * d0; di1 += w * d1;
                DX[j] -= w * d0; DY[j] -= w * d1;
                gi0 += f * LX[j]; gi1 += f * LY[j];
                GX[j] += f * hl0; GY[j] += f * hl1;
            }
            DX[i] += di0; DY[i] += di1; GX[i] += h * gi0; GY[i] += h * gi1;
        }
        for (int i = 0; i < P; i++) {
            dx[2 * i] = DX[i]; dx[2 * i + 1] = DY[i];
            ga[2 * i] += GX[i]; ga[2 * i + 1] += GY[i];
        }
        free(buf);
    }
    /* kernel choice hoisted out of the loops: one specialised copy per kernel */
    LK_CLONES static void lk_velocity_vjp_d(const double* x, const double* a, const double* lam, int P, const int* gend,
                                            const double* ginv, int kind, double h, double* dx, double* ga) {
        if (kind == 0) { lk_velocity_vjp_d_k(x, a, lam, P, gend, ginv, 0, h, dx, ga); }
        else { lk_velocity_vjp_d_k(x, a, lam, P, gend, ginv, 1, h, dx, ga); }
    }

    LK_INLINE void lk_ham_field_d_k(const double* x, const double* p, int P, const int* gend, const double* ginv,
                                         const int kind, double* vx, double* vp) {
        double* buf = (double*)malloc(sizeof(double) * 8 * (size_t)P);
        double *X = buf, *Y = buf + P, *PX = buf + 2 * P, *PY = buf + 3 * P;
        double *VX = buf + 4 * P, *VY = buf + 5 * P, *QX = buf + 6 * P, *QY = buf + 7 * P;
        for (int i = 0; i < P; i++) {
            X[i] = x[2 * i]; Y[i] = x[2 * i + 1]; PX[i] = p[2 * i]; PY[i] = p[2 * i + 1];
            VX[i] = PX[i]; VY[i] = PY[i]; QX[i] = 0; QY[i] = 0;
        }
        for (int i = 0; i < P; i++) {
            const double xi = X[i], yi = Y[i], pi0 = PX[i], pi1 = PY[i], inv = ginv[i];
            double a0 = 0, a1 = 0, b0 = 0, b1 = 0;
            const int e = gend[i];
            #pragma omp simd reduction(+:a0,a1,b0,b1)
            for (int j = i + 1; j < e; j++) {
                double d0 = xi - X[j], d1 = yi - Y[j];
                double f = lk_kval_d(d0 * d0 + d1 * d1, inv, kind);
                double f1 = lk_k1_d(f, inv, kind);
                a0 += f * PX[j]; a1 += f * PY[j];
                VX[j] += f * pi0; VY[j] += f * pi1;
                double w = -2 * f1 * (pi0 * PX[j] + pi1 * PY[j]);
                b0 += w * d0; b1 += w * d1;
                QX[j] -= w * d0; QY[j] -= w * d1;
            }
            VX[i] += a0; VY[i] += a1; QX[i] += b0; QY[i] += b1;
        }
        for (int i = 0; i < P; i++) {
            vx[2 * i] = VX[i]; vx[2 * i + 1] = VY[i]; vp[2 * i] = QX[i]; vp[2 * i + 1] = QY[i];
        }
        free(buf);
    }
    /* kernel choice hoisted out of the loops: one specialised copy per kernel */
    LK_CLONES static void lk_ham_field_d(const double* x, const double* p, int P, const int* gend, const double* ginv,
                                         int kind, double* vx, double* vp) {
        if (kind == 0) { lk_ham_field_d_k(x, p, P, gend, ginv, 0, vx, vp); }
        else { lk_ham_field_d_k(x, p, P, gend, ginv, 1, vx, vp); }
    }

    LK_INLINE void lk_ham_vjp_d_k(const double* x, const double* p, const double* ca, const double* cb, int P,
                                       const int* gend, const double* ginv, const int kind, double* gx, double* gp) {
        double* buf = (double*)malloc(sizeof(double) * 12 * (size_t)P);
        double *X = buf, *Y = buf + P, *PX = buf + 2 * P, *PY = buf + 3 * P, *AX = buf + 4 * P, *AY = buf + 5 * P;
        double *BX = buf + 6 * P, *BY = buf + 7 * P, *GXX = buf + 8 * P, *GXY = buf + 9 * P;
        double *GPX = buf + 10 * P, *GPY = buf + 11 * P;
        for (int i = 0; i < P; i++) {
            X[i] = x[2 * i]; Y[i] = x[2 * i + 1]; PX[i] = p[2 * i]; PY[i] = p[2 * i + 1];
            AX[i] = ca[2 * i]; AY[i] = ca[2 * i + 1]; BX[i] = cb[2 * i]; BY[i] = cb[2 * i + 1];
            GXX[i] = 0; GXY[i] = 0; GPX[i] = AX[i]; GPY[i] = AY[i];
        }
        for (int i = 0; i < P; i++) {
            const double xi = X[i], yi = Y[i], pi0 = PX[i], pi1 = PY[i], ai0 = AX[i], ai1 = AY[i];
            const double bi0 = BX[i], bi1 = BY[i], inv = ginv[i];
            double sx0 = 0, sx1 = 0, sp0 = 0, sp1 = 0;
            const int e = gend[i];
            #pragma omp simd reduction(+:sx0,sx1,sp0,sp1)
            for (int j = i + 1; j < e; j++) {
                double d0 = xi - X[j], d1 = yi - Y[j];
                double f = lk_kval_d(d0 * d0 + d1 * d1, inv, kind);
                double f1 = lk_k1_d(f, inv, kind), f2 = lk_k2_d(f, inv, kind);
                double g = -2 * f1, g1 = -2 * f2;
                double c = pi0 * PX[j] + pi1 * PY[j];
                double db0 = bi0 - BX[j], db1 = bi1 - BY[j];
                double ee = db0 * d0 + db1 * d1;
                double s = 2 * f1 * (ai0 * PX[j] + ai1 * PY[j] + AX[j] * pi0 + AY[j] * pi1) + 2 * g1 * c * ee;
                double q0 = s * d0 + g * c * db0, q1 = s * d1 + g * c * db1;
                sx0 += q0; sx1 += q1;
                GXX[j] -= q0; GXY[j] -= q1;
                double ge = g * ee;
                sp0 += f * AX[j] + ge * PX[j]; sp1 += f * AY[j] + ge * PY[j];
                GPX[j] += f * ai0 + ge * pi0; GPY[j] += f * ai1 + ge * pi1;
            }
            GXX[i] += sx0; GXY[i] += sx1; GPX[i] += sp0; GPY[i] += sp1;
        }
        for (int i = 0; i < P; i++) {
            gx[2 * i] = GXX[i]; gx[2 * i + 1] = GXY[i]; gp[2 * i] = GPX[i]; gp[2 * i + 1] = GPY[i];
        }
        free(buf);
    }
    /* kernel choice hoisted out of the loops: one specialised copy per kernel */
    LK_CLONES static void lk_ham_vjp_d(const double* x, const double* p, const double* ca, const double* cb, int P,
                                       const int* gend, const double* ginv, int kind, double* gx, double* gp) {
        if (kind == 0) { lk_ham_vjp_d_k(x, p, ca, cb, P, gend, ginv, 0, gx, gp); }
        else { lk_ham_vjp_d_k(x, p, ca, cb, P, gend, ginv, 1, gx, gp); }
    }

    /* Curve energy sum_{i, j} k(c1_i, c2_j) w(t1_i, t2_j) over paired blocks.  self_ != 0: c2 == c1, pairs
       j > i counted twice plus the diagonal; else j in [lo_i, hi_i).  Gradients times ``scale`` are added to
       g* when grad != 0.  w = t.s (currents) or (t.s)^2 / (|t||s|) (varifold). */
    LK_INLINE double lk_curve_energy_d_00_k(const double* c1, const double* t1, int N1, const double* c2,
                                              const double* t2, int N2, const int* lo, const int* hi, const double* inv1,
                                              const int kind, int self_, double scale, double* gc1,
                                              double* gt1, double* gc2, double* gt2) {
        double* buf = (double*)malloc(sizeof(double) * 14 * (size_t)(N1 > N2 ? N1 : N2));
        int M = N1 > N2 ? N1 : N2;
        double *CX = buf, *CY = buf + M, *TX = buf + 2 * M, *TY = buf + 3 * M, *IN = buf + 4 * M;
        double *GCX = buf + 5 * M, *GCY = buf + 6 * M, *GTX = buf + 7 * M, *GTY = buf + 8 * M;
        double *GCXi = buf + 9 * M, *GCYi = buf + 10 * M, *GTXi = buf + 11 * M, *GTYi = buf + 12 * M;
        double *NR = buf + 13 * M;
        for (int j = 0; j < N2; j++) {
            CX[j] = c2[2 * j]; CY[j] = c2[2 * j + 1]; TX[j] = t2[2 * j]; TY[j] = t2[2 * j + 1];
            double nn = sqrt(TX[j] * TX[j] + TY[j] * TY[j]);
            IN[j] = nn > 0 ? 1.0 / nn : 0.0;
            NR[j] = nn;
            GCX[j] = 0; GCY[j] = 0; GTX[j] = 0; GTY[j] = 0;
        }
        for (int i = 0; i < N1; i++) { GCXi[i] = 0; GCYi[i] = 0; GTXi[i] = 0; GTYi[i] = 0; }
        const double mult = self_ ? 2.0 : 1.0;
        double etot = 0;
        for (int i = 0; i < N1; i++) {
            const double ci0 = c1[2 * i], ci1 = c1[2 * i + 1], ti0 = t1[2 * i], ti1 = t1[2 * i + 1], inv = inv1[i];
            const double nti = sqrt(ti0 * ti0 + ti1 * ti1);
            const double ini = nti > 0 ? 1.0 / nti : 0.0;
            int j0 = self_ ? i + 1 : lo[i], j1 = self_ ? hi[i] : hi[i];
            double e = 0, sc0 = 0, sc1 = 0, st0 = 0, st1 = 0;
            if (self_) {  /* diagonal: k = 1, w(t, t) = |t|^2, dw/dt = 2 t for both arguments */
                e += ti0 * ti0 + ti1 * ti1;
                st0 = 2 * scale * ti0; st1 = 2 * scale * ti1;
            }
            #pragma omp simd reduction(+:e,sc0,sc1,st0,st1)
            for (int j = j0; j < j1; j++) {
                double d0 = ci0 - CX[j], d1 = ci1 - CY[j];
                double f = lk_kval_d(d0 * d0 + d1 * d1, inv, kind);
                double dot = ti0 * TX[j] + ti1 * TY[j];
                double w;
                if (0) {
                    double q = dot * ini * IN[j];
                    w = q * dot;
                    
                } else {
                    w = dot;
                }
                e += mult * f * w;
            }
            etot += e;
            GCXi[i] += sc0; GCYi[i] += sc1; GTXi[i] += st0; GTYi[i] += st1;
        }
        if (0) {
            for (int i = 0; i < N1; i++) {
                gc1[2 * i] += GCXi[i]; gc1[2 * i + 1] += GCYi[i]; gt1[2 * i] += GTXi[i]; gt1[2 * i + 1] += GTYi[i];
            }
            for (int j = 0; j < N2; j++) {
                gc2[2 * j] += GCX[j]; gc2[2 * j + 1] += GCY[j]; gt2[2 * j] += GTX[j]; gt2[2 * j + 1] += GTY[j];
            }
        }
        free(buf);
        return etot;
    }
    /* kernel choice hoisted out of the loops: one specialised copy per kernel */
    LK_CLONES static double lk_curve_energy_d_00(const double* c1, const double* t1, int N1, const double* c2,
                                              const double* t2, int N2, const int* lo, const int* hi, const double* inv1,
                                              int kind, int self_, double scale, double* gc1,
                                              double* gt1, double* gc2, double* gt2) {
        if (kind == 0) { return lk_curve_energy_d_00_k(c1, t1, N1, c2, t2, N2, lo, hi, inv1, 0, self_, scale, gc1, gt1, gc2, gt2); }
        else { return lk_curve_energy_d_00_k(c1, t1, N1, c2, t2, N2, lo, hi, inv1, 1, self_, scale, gc1, gt1, gc2, gt2); }
    }
    LK_INLINE double lk_curve_energy_d_01_k(const double* c1, const double* t1, int N1, const double* c2,
                                              const double* t2, int N2, const int* lo, const int* hi, const double* inv1,
                                              const int kind, int self_, double scale, double* gc1,
                                              double* gt1, double* gc2, double* gt2) {
        double* buf = (double*)malloc(sizeof(double) * 14 * (size_t)(N1 > N2 ? N1 : N2));
        int M = N1 > N2 ? N1 : N2;
        double *CX = buf, *CY = buf + M, *TX = buf + 2 * M, *TY = buf + 3 * M, *IN = buf + 4 * M;
        double *GCX = buf + 5 * M, *GCY = buf + 6 * M, *GTX = buf + 7 * M, *GTY = buf + 8 * M;
        double *GCXi = buf + 9 * M, *GCYi = buf + 10 * M, *GTXi = buf + 11 * M, *GTYi = buf + 12 * M;
        double *NR = buf + 13 * M;
        for (int j = 0; j < N2; j++) {
            CX[j] = c2[2 * j]; CY[j] = c2[2 * j + 1]; TX[j] = t2[2 * j]; TY[j] = t2[2 * j + 1];
            double nn = sqrt(TX[j] * TX[j] + TY[j] * TY[j]);
            IN[j] = nn > 0 ? 1.0 / nn : 0.0;
            NR[j] = nn;
            GCX[j] = 0; GCY[j] = 0; GTX[j] = 0; GTY[j] = 0;
        }
        for (int i = 0; i < N1; i++) { GCXi[i] = 0; GCYi[i] = 0; GTXi[i] = 0; GTYi[i] = 0; }
        const double mult = self_ ? 2.0 : 1.0;
        double etot = 0;
        for (int i = 0; i < N1; i++) {
            const double ci0 = c1[2 * i], ci1 = c1[2 * i + 1], ti0 = t1[2 * i], ti1 = t1[2 * i + 1], inv = inv1[i];
            const double nti = sqrt(ti0 * ti0 + ti1 * ti1);
            const double ini = nti > 0 ? 1.0 / nti : 0.0;
            int j0 = self_ ? i + 1 : lo[i], j1 = self_ ? hi[i] : hi[i];
            double e = 0, sc0 = 0, sc1 = 0, st0 = 0, st1 = 0;
            if (self_) {  /* diagonal: k = 1, w(t, t) = |t|^2, dw/dt = 2 t for both arguments */
                e += ti0 * ti0 + ti1 * ti1;
                st0 = 2 * scale * ti0; st1 = 2 * scale * ti1;
            }
            #pragma omp simd reduction(+:e,sc0,sc1,st0,st1)
            for (int j = j0; j < j1; j++) {
                double d0 = ci0 - CX[j], d1 = ci1 - CY[j];
                double f = lk_kval_d(d0 * d0 + d1 * d1, inv, kind);
                double f1 = lk_k1_d(f, inv, kind);
                double dot = ti0 * TX[j] + ti1 * TY[j];
                double w, a0, a1, b0, b1;
                if (0) {
                    double q = dot * ini * IN[j];
                    w = q * dot;
                    double qq = q * q;
                    a0 = 2 * q * TX[j] - qq * ini * ti0 * NR[j];
                    a1 = 2 * q * TY[j] - qq * ini * ti1 * NR[j];
                    b0 = 2 * q * ti0 - qq * IN[j] * TX[j] * nti;
                    b1 = 2 * q * ti1 - qq * IN[j] * TY[j] * nti;
                } else {
                    w = dot; a0 = TX[j]; a1 = TY[j]; b0 = ti0; b1 = ti1;
                }
                e += mult * f * w;
                double qd = scale * mult * 2 * f1 * w;
                sc0 += qd * d0; sc1 += qd * d1;
                GCX[j] -= qd * d0; GCY[j] -= qd * d1;
                double sf = scale * mult * f;
                st0 += sf * a0; st1 += sf * a1;
                GTX[j] += sf * b0; GTY[j] += sf * b1;
            }
            etot += e;
            GCXi[i] += sc0; GCYi[i] += sc1; GTXi[i] += st0; GTYi[i] += st1;
        }
        if (1) {
            for (int i = 0; i < N1; i++) {
                gc1[2 * i] += GCXi[i]; gc1[2 * i + 1] += GCYi[i]; gt1[2 * i] += GTXi[i]; gt1[2 * i + 1] += GTYi[i];
            }
            for (int j = 0; j < N2; j++) {
                gc2[2 * j] += GCX[j]; gc2[2 * j + 1] += GCY[j]; gt2[2 * j] += GTX[j]; gt2[2 * j + 1] += GTY[j];
            }
        }
        free(buf);
        return etot;
    }
    /* kernel choice hoisted out of the loops: one specialised copy per kernel */
    LK_CLONES static double lk_curve_energy_d_01(const double* c1, const double* t1, int N1, const double* c2,
                                              const double* t2, int N2, const int* lo, const int* hi, const double* inv1,
                                              int kind, int self_, double scale, double* gc1,
                                              double* gt1, double* gc2, double* gt2) {
        if (kind == 0) { return lk_curve_energy_d_01_k(c1, t1, N1, c2, t2, N2, lo, hi, inv1, 0, self_, scale, gc1, gt1, gc2, gt2); }
        else { return lk_curve_energy_d_01_k(c1, t1, N1, c2, t2, N2, lo, hi, inv1, 1, self_, scale, gc1, gt1, gc2, gt2); }
    }
    LK_INLINE double lk_curve_energy_d_10_k(const double* c1, const double* t1, int N1, const double* c2,
                                              const double* t2, int N2, const int* lo, const int* hi, const double* inv1,
                                              const int kind, int self_, double scale, double* gc1,
                                              double* gt1, double* gc2, double* gt2) {
        double* buf = (double*)malloc(sizeof(double) * 14 * (size_t)(N1 > N2 ? N1 : N2));
        int M = N1 > N2 ? N1 : N2;
        double *CX = buf, *CY = buf + M, *TX = buf + 2 * M, *TY = buf + 3 * M, *IN = buf + 4 * M;
        double *GCX = buf + 5 * M, *GCY = buf + 6 * M, *GTX = buf + 7 * M, *GTY = buf + 8 * M;
        double *GCXi = buf + 9 * M, *GCYi = buf + 10 * M, *GTXi = buf + 11 * M, *GTYi = buf + 12 * M;
        double *NR = buf + 13 * M;
        for (int j = 0; j < N2; j++) {
            CX[j] = c2[2 * j]; CY[j] = c2[2 * j + 1]; TX[j] = t2[2 * j]; TY[j] = t2[2 * j + 1];
            double nn = sqrt(TX[j] * TX[j] + TY[j] * TY[j]);
            IN[j] = nn > 0 ? 1.0 / nn : 0.0;
            NR[j] = nn;
            GCX[j] = 0; GCY[j] = 0; GTX[j] = 0; GTY[j] = 0;
        }
        for (int i = 0; i < N1; i++) { GCXi[i] = 0; GCYi[i] = 0; GTXi[i] = 0; GTYi[i] = 0; }
        const double mult = self_ ? 2.0 : 1.0;
        double etot = 0;
        for (int i = 0; i < N1; i++) {
            const double ci0 = c1[2 * i], ci1 = c1[2 * i + 1], ti0 = t1[2 * i], ti1 = t1[2 * i + 1], inv = inv1[i];
            const double nti = sqrt(ti0 * ti0 + ti1 * ti1);
            const double ini = nti > 0 ? 1.0 / nti : 0.0;
            int j0 = self_ ? i + 1 : lo[i], j1 = self_ ? hi[i] : hi[i];
            double e = 0, sc0 = 0, sc1 = 0, st0 = 0, st1 = 0;
            if (self_) {  /* diagonal: k = 1, w(t, t) = |t|^2, dw/dt = 2 t for both arguments */
                e += ti0 * ti0 + ti1 * ti1;
                st0 = 2 * scale * ti0; st1 = 2 * scale * ti1;
            }
            #pragma omp simd reduction(+:e,sc0,sc1,st0,st1)
            for (int j = j0; j < j1; j++) {
                double d0 = ci0 - CX[j], d1 = ci1 - CY[j];
                double f = lk_kval_d(d0 * d0 + d1 * d1, inv, kind);
                double dot = ti0 * TX[j] + ti1 * TY[j];
                double w;
                if (1) {
                    double q = dot * ini * IN[j];
                    w = q * dot;
                    
                } else {
                    w = dot;
                }
                e += mult * f * w;
            }
            etot += e;
            GCXi[i] += sc0; GCYi[i] += sc1; GTXi[i] += st0; GTYi[i] += st1;
        }
        if (0) {
            for (int i = 0; i < N1; i++) {
                gc1[2 * i] += GCXi[i]; gc1[2 * i + 1] += GCYi[i]; gt1[2 * i] += GTXi[i]; gt1[2 * i + 1] += GTYi[i];
            }
            for (int j = 0; j < N2; j++) {
                gc2[2 * j] += GCX[j]; gc2[2 * j + 1] += GCY[j]; gt2[2 * j] += GTX[j]; gt2[2 * j + 1] += GTY[j];
            }
        }
        free(buf);
        return etot;
    }
    /* kernel choice hoisted out of the loops: one specialised copy per kernel */
    LK_CLONES static double lk_curve_energy_d_10(const double* c1, const double* t1, int N1, const double* c2,
                                              const double* t2, int N2, const int* lo, const int* hi, const double* inv1,
                                              int kind, int self_, double scale, double* gc1,
                                              double* gt1, double* gc2, double* gt2) {
        if (kind == 0) { return lk_curve_energy_d_10_k(c1, t1, N1, c2, t2, N2, lo, hi, inv1, 0, self_, scale, gc1, gt1, gc2, gt2); }
        else { return lk_curve_energy_d_10_k(c1, t1, N1, c2, t2, N2, lo, hi, inv1, 1, self_, scale, gc1, gt1, gc2, gt2); }
    }
    LK_INLINE double lk_curve_energy_d_11_k(const double* c1, const double* t1, int N1, const double* c2,
                                              const double* t2, int N2, const int* lo, const int* hi, const double* inv1,
                                              const int kind, int self_, double scale, double* gc1,
                                              double* gt1, double* gc2, double* gt2) {
        double* buf = (double*)malloc(sizeof(double) * 14 * (size_t)(N1 > N2 ? N1 : N2));
        int M = N1 > N2 ? N1 : N2;
        double *CX = buf, *CY = buf + M, *TX = buf + 2 * M, *TY = buf + 3 * M, *IN = buf + 4 * M;
        double *GCX = buf + 5 * M, *GCY = buf + 6 * M, *GTX = buf + 7 * M, *GTY = buf + 8 * M;
        double *GCXi = buf + 9 * M, *GCYi = buf + 10 * M, *GTXi = buf + 11 * M, *GTYi = buf + 12 * M;
        double *NR = buf + 13 * M;
        for (int j = 0; j < N2; j++) {
            CX[j] = c2[2 * j]; CY[j] = c2[2 * j + 1]; TX[j] = t2[2 * j]; TY[j] = t2[2 * j + 1];
            double nn = sqrt(TX[j] * TX[j] + TY[j] * TY[j]);
            IN[j] = nn > 0 ? 1.0 / nn : 0.0;
            NR[j] = nn;
            GCX[j] = 0; GCY[j] = 0; GTX[j] = 0; GTY[j] = 0;
        }
        for (int i = 0; i < N1; i++) { GCXi[i] = 0; GCYi[i] = 0; GTXi[i] = 0; GTYi[i] = 0; }
        const double mult = self_ ? 2.0 : 1.0;
        double etot = 0;
        for (int i = 0; i < N1; i++) {
            const double ci0 = c1[2 * i], ci1 = c1[2 * i + 1], ti0 = t1[2 * i], ti1 = t1[2 * i + 1], inv = inv1[i];
            const double nti = sqrt(ti0 * ti0 + ti1 * ti1);
            const double ini = nti > 0 ? 1.0 / nti : 0.0;
            int j0 = self_ ? i + 1 : lo[i], j1 = self_ ? hi[i] : hi[i];
            double e = 0, sc0 = 0, sc1 = 0, st0 = 0, st1 = 0;
            if (self_) {  /* diagonal: k = 1, w(t, t) = |t|^2, dw/dt = 2 t for both arguments */
                e += ti0 * ti0 + ti1 * ti1;
                st0 = 2 * scale * ti0; st1 = 2 * scale * ti1;
            }
            #pragma omp simd reduction(+:e,sc0,sc1,st0,st1)
            for (int j = j0; j < j1; j++) {
                double d0 = ci0 - CX[j], d1 = ci1 - CY[j];
                double f = lk_kval_d(d0 * d0 + d1 * d1, inv, kind);
                double f1 = lk_k1_d(f, inv, kind);
                double dot = ti0 * TX[j] + ti1 * TY[j];
                double w, a0, a1, b0, b1;
                if (1) {
                    double q = dot * ini * IN[j];
                    w = q * dot;
                    double qq = q * q;
                    a0 = 2 * q * TX[j] - qq * ini * ti0 * NR[j];
                    a1 = 2 * q * TY[j] - qq * ini * ti1 * NR[j];
                    b0 = 2 * q * ti0 - qq * IN[j] * TX[j] * nti;
                    b1 = 2 * q * ti1 - qq * IN[j] * TY[j] * nti;
                } else {
                    w = dot; a0 = TX[j]; a1 = TY[j]; b0 = ti0; b1 = ti1;
                }
                e += mult * f * w;
                double qd = scale * mult * 2 * f1 * w;
                sc0 += qd * d0; sc1 += qd * d1;
                GCX[j] -= qd * d0; GCY[j] -= qd * d1;
                double sf = scale * mult * f;
                st0 += sf * a0; st1 += sf * a1;
                GTX[j] += sf * b0; GTY[j] += sf * b1;
            }
            etot += e;
            GCXi[i] += sc0; GCYi[i] += sc1; GTXi[i] += st0; GTYi[i] += st1;
        }
        if (1) {
            for (int i = 0; i < N1; i++) {
                gc1[2 * i] += GCXi[i]; gc1[2 * i + 1] += GCYi[i]; gt1[2 * i] += GTXi[i]; gt1[2 * i + 1] += GTYi[i];
            }
            for (int j = 0; j < N2; j++) {
                gc2[2 * j] += GCX[j]; gc2[2 * j + 1] += GCY[j]; gt2[2 * j] += GTX[j]; gt2[2 * j + 1] += GTY[j];
            }
        }
        free(buf);
        return etot;
    }
    /* kernel choice hoisted out of the loops: one specialised copy per kernel */
    LK_CLONES static double lk_curve_energy_d_11(const double* c1, const double* t1, int N1, const double* c2,
                                              const double* t2, int N2, const int* lo, const int* hi, const double* inv1,
                                              int kind, int self_, double scale, double* gc1,
                                              double* gt1, double* gc2, double* gt2) {
        if (kind == 0) { return lk_curve_energy_d_11_k(c1, t1, N1, c2, t2, N2, lo, hi, inv1, 0, self_, scale, gc1, gt1, gc2, gt2); }
        else { return lk_curve_energy_d_11_k(c1, t1, N1, c2, t2, N2, lo, hi, inv1, 1, self_, scale, gc1, gt1, gc2, gt2); }
    }
    static double lk_curve_energy_d(const double* c1, const double* t1, int N1, const double* c2, const double* t2,
                                    int N2, const int* lo, const int* hi, const double* inv1, int kind, int vari,
                                    int self_, int grad, double scale, double* gc1, double* gt1, double* gc2, double* gt2) {
        if (vari)
            return grad ? lk_curve_energy_d_11(c1, t1, N1, c2, t2, N2, lo, hi, inv1, kind, self_, scale,
                                                 gc1, gt1, gc2, gt2)
                        : lk_curve_energy_d_10(c1, t1, N1, c2, t2, N2, lo, hi, inv1, kind, self_, scale,
                                                 gc1, gt1, gc2, gt2);
        return grad ? lk_curve_energy_d_01(c1, t1, N1, c2, t2, N2, lo, hi, inv1, kind, self_, scale,
                                             gc1, gt1, gc2, gt2)
                    : lk_curve_energy_d_00(c1, t1, N1, c2, t2, N2, lo, hi, inv1, kind, self_, scale,
                                             gc1, gt1, gc2, gt2);
    }


    /* ---- REAL = float ---- */
    static inline float lk_kval_f(float u, float inv, int kind) {
        return kind == 0 ? lk_exp_f(-u * inv) : 1.0f / (1.0f + u * inv);
    }
    static inline float lk_k1_f(float f, float inv, int kind) { return kind == 0 ? -inv * f : -inv * f * f; }
    static inline float lk_k2_f(float f, float inv, int kind) {
        return kind == 0 ? inv * inv * f : 2.0f * inv * inv * f * f * f;
    }

    LK_INLINE void lk_velocity_f_k(const float* x, const float* a, int P, const int* gend, const float* ginv,
                                        const int kind, float* v) {
        float* buf = (float*)malloc(sizeof(float) * 6 * (size_t)P);
        float *X = buf, *Y = buf + P, *AX = buf + 2 * P, *AY = buf + 3 * P, *VX = buf + 4 * P, *VY = buf + 5 * P;
        for (int i = 0; i < P; i++) {
            X[i] = x[2 * i]; Y[i] = x[2 * i + 1]; AX[i] = a[2 * i]; AY[i] = a[2 * i + 1];
            VX[i] = AX[i]; VY[i] = AY[i];
        }
        for (int i = 0; i < P; i++) {
            const float xi = X[i], yi = Y[i], ai0 = AX[i], ai1 = AY[i], inv = ginv[i];
            float s0 = 0, s1 = 0;
            const int e = gend[i];
            #pragma omp simd reduction(+:s0,s1)
            for (int j = i + 1; j < e; j++) {
                float d0 = xi - X[j], d1 = yi - Y[j];
                float k = lk_kval_f(d0 * d0 + d1 * d1, inv, kind);
                s0 += k * AX[j]; s1 += k * AY[j];
                VX[j] += k * ai0; VY[j] += k * ai1;
            }
            VX[i] += s0; VY[i] += s1;
        }
        for (int i = 0; i < P; i++) { v[2 * i] = VX[i]; v[2 * i + 1] = VY[i]; }
        free(buf);
    }
    /* kernel choice hoisted out of the loops: one specialised copy per kernel */
    LK_CLONES static void lk_velocity_f(const float* x, const float* a, int P, const int* gend, const float* ginv,
                                        int kind, float* v) {
        if (kind == 0) { lk_velocity_f_k(x, a, P, gend, ginv, 0, v); }
        else { lk_velocity_f_k(x, a, P, gend, ginv, 1, v); }
    }

    LK_INLINE void lk_velocity_vjp_f_k(const float* x, const float* a, const float* lam, int P, const int* gend,
                                            const float* ginv, const int kind, float h, float* dx, float* ga) {
        float* buf = (float*)malloc(sizeof(float) * 10 * (size_t)P);
        float *X = buf, *Y = buf + P, *AX = buf + 2 * P, *AY = buf + 3 * P, *LX = buf + 4 * P, *LY = buf + 5 * P;
        float *DX = buf + 6 * P, *DY = buf + 7 * P, *GX = buf + 8 * P, *GY = buf + 9 * P;
        for (int i = 0; i < P; i++) {
            X[i] = x[2 * i]; Y[i] = x[2 * i + 1]; AX[i] = a[2 * i]; AY[i] = a[2 * i + 1];
            LX[i] = lam[2 * i]; LY[i] = lam[2 * i + 1];
            DX[i] = 0; DY[i] = 0; GX[i] = h * LX[i]; GY[i] = h * LY[i];
        }
        for (int i = 0; i < P; i++) {
            const float xi = X[i], yi = Y[i], ai0 = AX[i], ai1 = AY[i], li0 = LX[i], li1 = LY[i], inv = ginv[i];
            const float hl0 = h * li0, hl1 = h * li1;
            float di0 = 0, di1 = 0, gi0 = 0, gi1 = 0;
            const int e = gend[i];
            #pragma omp simd reduction(+:di0,di1,gi0,gi1)
            for (int j = i + 1; j < e; j++) {
                float d0 = xi - X[j], d1 = yi - Y[j];
                float f = lk_kval_f(d0 * d0 + d1 * d1, inv, kind);
                float f1 = lk_k1_f(f, inv, kind);
                float w = 2 * f1 * (li0 * AX[j] + li1 * AY[j] + LX[j] * ai0 + LY[j] * ai1);
                di0 += w * d0; di1 += w * d1;
                DX[j] -= w * d0; DY[j] -= w * d1;
                gi0 += f * LX[j]; gi1 += f * LY[j];
                GX[j] += f * hl0; GY[j] += f * hl1;
            }
            DX[i] += di0; DY[i] += di1; GX[i] += h * gi0; GY[i] += h * gi1;
        }
        for (int i = 0; i < P; i++) {
            dx[2 * i] = DX[i]; dx[2 * i + 1] = DY[i];
            ga[2 * i] += GX[i]; ga[2 * i + 1] += GY[i];
        }
        free(buf);
    }
    /* kernel choice hoisted out of the loops: one specialised copy per kernel */
    LK_CLONES static void lk_velocity_vjp_f(const float* x, const float* a, const float* lam, int P, const int* gend,
                                            const float* ginv, int kind, float h, float* dx, float* ga) {
        if (kind == 0) { lk_velocity_vjp_f_k(x, a, lam, P, gend, ginv, 0, h, dx, ga); }
        else { lk_velocity_vjp_f_k(x, a, lam, P, gend, ginv, 1, h, dx, ga); }
    }

    LK_INLINE void lk_ham_field_f_k(const float* x, const float* p, int P, const int* gend, const float* ginv,
                                         const int kind, float* vx, float* vp) {
        float* buf = (float*)malloc(sizeof(float) * 8 * (size_t)P);
        float *X = buf, *Y = buf + P, *PX = buf + 2 * P, *PY = buf + 3 * P;
        float *VX = buf + 4 * P, *VY = buf + 5 * P, *QX = buf + 6 * P, *QY = buf + 7 * P;
        for (int i = 0; i < P; i++) {
            X[i] = x[2 * i]; Y[i] = x[2 * i + 1]; PX[i] = p[2 * i]; PY[i] = p[2 * i + 1];
            VX[i] = PX[i]; VY[i] = PY[i]; QX[i] = 0; QY[i] = 0;
        }
        for (int i = 0; i < P; i++) {
            const float xi = X[i], yi = Y[i], pi0 = PX[i], pi1 = PY[i], inv = ginv[i];
            float a0 = 0, a1 = 0, b0 = 0, b1 = 0;
            const int e = gend[i];
            #pragma omp simd reduction(+:a0,a1,b0,b1)
            for (int j = i + 1; j < e; j++) {
                float d0 = xi - X[j], d1 = yi - Y[j];
                float f = lk_kval_f(d0 * d0 + d1 * d1, inv, kind);
                float f1 = lk_k1_f(f, inv, kind);
                a0 += f * PX[j]; a1 += f * PY[j];
                VX[j] += f * pi0; VY[j] += f * pi1;
                float w = -2 * f1 * (pi0 * PX[j] + pi1 * PY[j]);
                b0 += w * d0; b1 += w * d1;
                QX[j] -= w * d0; QY[j] -= w * d1;
            }
            VX[i] += a0; VY[i] += a1; QX[i] += b0; QY[i] += b1;
        }
        for (int i = 0; i < P; i++) {
            vx[2 * i] = VX[i]; vx[2 * i + 1] = VY[i]; vp[2 * i] = QX[i]; vp[2 * i + 1] = QY[i];
        }
        free(buf);
    }
    /* kernel choice hoisted out of the loops: one specialised copy per kernel */
    LK_CLONES static void lk_ham_field_f(const float* x, const float* p, int P, const int* gend, const float* ginv,
                                         int kind, float* vx, float* vp) {
        if (kind == 0) { lk_ham_field_f_k(x, p, P, gend, ginv, 0, vx, vp); }
        else { lk_ham_field_f_k(x, p, P, gend, ginv, 1, vx, vp); }
    }

    LK_INLINE void lk_ham_vjp_f_k(const float* x, const float* p, const float* ca, const float* cb, int P,
                                       const int* gend, const float* ginv, const int kind, float* gx, float* gp) {
        float* buf = (float*)malloc(sizeof(float) * 12 * (size_t)P);
        float *X = buf, *Y = buf + P, *PX = buf + 2 * P, *PY = buf + 3 * P, *AX = buf + 4 * P, *AY = buf + 5 * P;
        float *BX = buf + 6 * P, *BY = buf + 7 * P, *GXX = buf + 8 * P, *GXY = buf + 9 * P;
        float *GPX = buf + 10 * P, *GPY = buf + 11 * P;
        for (int i = 0; i < P; i++) {
            X[i] = x[2 * i]; Y[i] = x[2 * i + 1]; PX[i] = p[2 * i]; PY[i] = p[2 * i + 1];
            AX[i] = ca[2 * i]; AY[i] = ca[2 * i + 1]; BX[i] = cb[2 * i]; BY[i] = cb[2 * i + 1];
            GXX[i] = 0; GXY[i] = 0; GPX[i] = AX[i]; GPY[i] = AY[i];
        }
        for (int i = 0; i < P; i++) {
            const float xi = X[i], yi = Y[i], pi0 = PX[i], pi1 = PY[i], ai0 = AX[i], ai1 = AY[i];
            const float bi0 = BX[i], bi1 = BY[i], inv = ginv[i];
            float sx0 = 0, sx1 = 0, sp0 = 0, sp1 = 0;
            const int e = gend[i];
            #pragma omp simd reduction(+:sx0,sx1,sp0,sp1)
            for (int j = i + 1; j < e; j++) {
                float d0 = xi - X[j], d1 = yi - Y[j];
                float f = lk_kval_f(d0 * d0 + d1 * d1, inv, kind);
                float f1 = lk_k1_f(f, inv, kind), f2 = lk_k2_f(f, inv, kind);
                float g = -2 * f1, g1 = -2 * f2;
                float c = pi0 * PX[j] + pi1 * PY[j];
                float db0 = bi0 - BX[j], db1 = bi1 - BY[j];
                float ee = db0 * d0 + db1 * d1;
                float s = 2 * f1 * (ai0 * PX[j] + ai1 * PY[j] + AX[j] * pi0 + AY[j] * pi1) + 2 * g1 * c * ee;
                float q0 = s * d0 + g * c * db0, q1 = s * d1 + g * c * db1;
                sx0 += q0; sx1 += q1;
                GXX[j] -= q0; GXY[j] -= q1;
                float ge = g * ee;
                sp0 += f * AX[j] + ge * PX[j]; sp1 += f * AY[j] + ge * PY[j];
                GPX[j] += f * ai0 + ge * pi0; GPY[j] += f * ai1 + ge * pi1;
            }
            GXX[i] += sx0; GXY[i] += sx1; GPX[i] += sp0; GPY[i] += sp1;
        }
        for (int i = 0; i < P; i++) {
            gx[2 * i] = GXX[i]; gx[2 * i + 1] = GXY[i]; gp[2 * i] = GPX[i]; gp[2 * i + 1] = GPY[i];
        }
        free(buf);
    }
    /* kernel choice hoisted out of the loops: one specialised copy per kernel */
    LK_CLONES static void lk_ham_vjp_f(const float* x, const float* p, const float* ca, const float* cb, int P,
                                       const int* gend, const float* ginv, int kind, float* gx, float* gp) {
        if (kind == 0) { lk_ham_vjp_f_k(x, p, ca, cb, P, gend, ginv, 0, gx, gp); }
        else { lk_ham_vjp_f_k(x, p, ca, cb, P, gend, ginv, 1, gx, gp); }
    }

    /* Curve energy sum_{i, j} k(c1_i, c2_j) w(t1_i, t2_j) over paired blocks.  self_ != 0: c2 == c1, pairs
       j > i counted twice plus the diagonal; else j in [lo_i, hi_i).  Gradients times ``scale`` are added to
       g* when grad != 0.  w = t.s (currents) or (t.s)^2 / (|t||s|) (varifold). */
    LK_INLINE float lk_curve_energy_f_00_k(const float* c1, const float* t1, int N1, const float* c2,
                                              const float* t2, int N2, const int* lo, const int* hi, const float* inv1,
                                              const int kind, int self_, float scale, float* gc1,
                                              float* gt1, float* gc2, float* gt2) {
        float* buf = (float*)malloc(sizeof(float) * 14 * (size_t)(N1 > N2 ? N1 : N2));
        int M = N1 > N2 ? N1 : N2;
        float *CX = buf, *CY = buf + M, *TX = buf + 2 * M, *TY = buf + 3 * M, *IN = buf + 4 * M;
        float *GCX = buf + 5 * M, *GCY = buf + 6 * M, *GTX = buf + 7 * M, *GTY = buf + 8 * M;
        float *GCXi = buf + 9 * M, *GCYi = buf + 10 * M, *GTXi = buf + 11 * M, *GTYi = buf + 12 * M;
        float *NR = buf + 13 * M;
        for (int j = 0; j < N2; j++) {
            CX[j] = c2[2 * j]; CY[j] = c2[2 * j + 1]; TX[j] = t2[2 * j]; TY[j] = t2[2 * j + 1];
            float nn = sqrtf(TX[j] * TX[j] + TY[j] * TY[j]);
            IN[j] = nn > 0 ? 1.0f / nn : 0.0f;
            NR[j] = nn;
            GCX[j] = 0; GCY[j] = 0; GTX[j] = 0; GTY[j] = 0;
        }
        for (int i = 0; i < N1; i++) { GCXi[i] = 0; GCYi[i] = 0; GTXi[i] = 0; GTYi[i] = 0; }
        const float mult = self_ ? 2.0f : 1.0f;
        float etot = 0;
        for (int i = 0; i < N1; i++) {
            const float ci0 = c1[2 * i], ci1 = c1[2 * i + 1], ti0 = t1[2 * i], ti1 = t1[2 * i + 1], inv = inv1[i];
            const float nti = sqrtf(ti0 * ti0 + ti1 * ti1);
            const float ini = nti > 0 ? 1.0f / nti : 0.0f;
            int j0 = self_ ? i + 1 : lo[i], j1 = self_ ? hi[i] : hi[i];
            float e = 0, sc0 = 0, sc1 = 0, st0 = 0, st1 = 0;
            if (self_) {  /* diagonal: k = 1, w(t, t) = |t|^2, dw/dt = 2 t for both arguments */
                e += ti0 * ti0 + ti1 * ti1;
                st0 = 2 * scale * ti0; st1 = 2 * scale * ti1;
            }
            #pragma omp simd reduction(+:e,sc0,sc1,st0,st1)
            for (int j = j0; j < j1; j++) {
                float d0 = ci0 - CX[j], d1 = ci1 - CY[j];
                float f = lk_kval_f(d0 * d0 + d1 * d1, inv, kind);
                float dot = ti0 * TX[j] + ti1 * TY[j];
                float w;
                if (0) {
                    float q = dot * ini * IN[j];
                    w = q * dot;
                    
                } else {
                    w = dot;
                }
                e += mult * f * w;
            }
            etot += e;
            GCXi[i] += sc0; GCYi[i] += sc1; GTXi[i] += st0; GTYi[i] += st1;
        }
        if (0) {
            for (int i = 0; i < N1; i++) {
                gc1[2 * i] += GCXi[i]; gc1[2 * i + 1] += GCYi[i]; gt1[2 * i] += GTXi[i]; gt1[2 * i + 1] += GTYi[i];
            }
            for (int j = 0; j < N2; j++) {
                gc2[2 * j] += GCX[j]; gc2[2 * j + 1] += GCY[j]; gt2[2 * j] += GTX[j]; gt2[2 * j + 1] += GTY[j];
            }
        }
        free(buf);
        return etot;
    }
    /* kernel choice hoisted out of the loops: one specialised copy per kernel */
    LK_CLONES static float lk_curve_energy_f_00(const float* c1, const float* t1, int N1, const float* c2,
                                              const float* t2, int N2, const int* lo, const int* hi, const float* inv1,
                                              int kind, int self_, float scale, float* gc1,
                                              float* gt1, float* gc2, float* gt2) {
        if (kind == 0) { return lk_curve_energy_f_00_k(c1, t1, N1, c2, t2, N2, lo, hi, inv1, 0, self_, scale, gc1, gt1, gc2, gt2); }
        else { return lk_curve_energy_f_00_k(c1, t1, N1, c2, t2, N2, lo, hi, inv1, 1, self_, scale, gc1, gt1, gc2, gt2); }
    }
    LK_INLINE float lk_curve_energy_f_01_k(const float* c1, const float* t1, int N1, const float* c2,
                                              const float* t2, int N2, const int* lo, const int* hi, const float* inv1,
                                              const int kind, int self_, float scale, float* gc1,
                                              float* gt1, float* gc2, float* gt2) {
        float* buf = (float*)malloc(sizeof(float) * 14 * (size_t)(N1 > N2 ? N1 : N2));
        int M = N1 > N2 ? N1 : N2;
        float *CX = buf, *CY = buf + M, *TX = buf + 2 * M, *TY = buf + 3 * M, *IN = buf + 4 * M;
        float *GCX = buf + 5 * M, *GCY = buf + 6 * M, *GTX = buf + 7 * M, *GTY = buf + 8 * M;
        float *GCXi = buf + 9 * M, *GCYi = buf + 10 * M, *GTXi = buf + 11 * M, *GTYi = buf + 12 * M;
        float *NR = buf + 13 * M;
        for (int j = 0; j < N2; j++) {
            CX[j] = c2[2 * j]; CY[j] = c2[2 * j + 1]; TX[j] = t2[2 * j]; TY[j] = t2[2 * j + 1];
            float nn = sqrtf(TX[j] * TX[j] + TY[j] * TY[j]);
            IN[j] = nn > 0 ? 1.0f / nn : 0.0f;
            NR[j] = nn;
            GCX[j] = 0; GCY[j] = 0; GTX[j] = 0; GTY[j] = 0;
        }
        for (int i = 0; i < N1; i++) { GCXi[i] = 0; GCYi[i] = 0; GTXi[i] = 0; GTYi[i] = 0; }
        const float mult = self_ ? 2.0f : 1.0f;
        float etot = 0;
        for (int i = 0; i < N1; i++) {
            const float ci0 = c1[2 * i], ci1 = c1[2 * i + 1], ti0 = t1[2 * i], ti1 = t1[2 * i + 1], inv = inv1[i];
            const float nti = sqrtf(ti0 * ti0 + ti1 * ti1);
            const float ini = nti > 0 ? 1.0f / nti : 0.0f;
            int j0 = self_ ? i + 1 : lo[i], j1 = self_ ? hi[i] : hi[i];
            float e = 0, sc0 = 0, sc1 = 0, st0 = 0, st1 = 0;
            if (self_) {  /* diagonal: k = 1, w(t, t) = |t|^2, dw/dt = 2 t for both arguments */
                e += ti0 * ti0 + ti1 * ti1;
                st0 = 2 * scale * ti0; st1 = 2 * scale * ti1;
            }
            #pragma omp simd reduction(+:e,sc0,sc1,st0,st1)
            for (int j = j0; j < j1; j++) {
                float d0 = ci0 - CX[j], d1 = ci1 - CY[j];
                float f = lk_kval_f(d0 * d0 + d1 * d1, inv, kind);
                float f1 = lk_k1_f(f, inv, kind);
                float dot = ti0 * TX[j] + ti1 * TY[j];
                float w, a0, a1, b0, b1;
                if (0) {
                    float q = dot * ini * IN[j];
                    w = q * dot;
                    float qq = q * q;
                    a0 = 2 * q * TX[j] - qq * ini * ti0 * NR[j];
                    a1 = 2 * q * TY[j] - qq * ini * ti1 * NR[j];
                    b0 = 2 * q * ti0 - qq * IN[j] * TX[j] * nti;
                    b1 = 2 * q * ti1 - qq * IN[j] * TY[j] * nti;
                } else {
                    w = dot; a0 = TX[j]; a1 = TY[j]; b0 = ti0; b1 = ti1;
                }
                e += mult * f * w;
                float qd = scale * mult * 2 * f1 * w;
                sc0 += qd * d0; sc1 += qd * d1;
                GCX[j] -= qd * d0; GCY[j] -= qd * d1;
                float sf = scale * mult * f;
                st0 += sf * a0; st1 += sf * a1;
                GTX[j] += sf * b0; GTY[j] += sf * b1;
            }
            etot += e;
            GCXi[i] += sc0; GCYi[i] += sc1; GTXi[i] += st0; GTYi[i] += st1;
        }
        if (1) {
            for (int i = 0; i < N1; i++) {
                gc1[2 * i] += GCXi[i]; gc1[2 * i + 1] += GCYi[i]; gt1[2 * i] += GTXi[i]; gt1[2 * i + 1] += GTYi[i];
            }
            for (int j = 0; j < N2; j++) {
                gc2[2 * j] += GCX[j]; gc2[2 * j + 1] += GCY[j]; gt2[2 * j] += GTX[j]; gt2[2 * j + 1] += GTY[j];
            }
        }
        free(buf);
        return etot;
    }
    /* kernel choice hoisted out of the loops: one specialised copy per kernel */
    LK_CLONES static float lk_curve_energy_f_01(const float* c1, const float* t1, int N1, const float* c2,
                                              const float* t2, int N2, const int* lo, const int* hi, const float* inv1,
                                              int kind, int self_, float scale, float* gc1,
                                              float* gt1, float* gc2, float* gt2) {
        if (kind == 0) { return lk_curve_energy_f_01_k(c1, t1, N1, c2, t2, N2, lo, hi, inv1, 0, self_, scale, gc1, gt1, gc2, gt2); }
        else { return lk_curve_energy_f_01_k(c1, t1, N1, c2, t2, N2, lo, hi, inv1, 1, self_, scale, gc1, gt1, gc2, gt2); }
    }
    LK_INLINE float lk_curve_energy_f_10_k(const float* c1, const float* t1, int N1, const float* c2,
                                              const float* t2, int N2, const int* lo, const int* hi, const float* inv1,
                                              const int kind, int self_, float scale, float* gc1,
                                              float* gt1, float* gc2, float* gt2) {
        float* buf = (float*)malloc(sizeof(float) * 14 * (size_t)(N1 > N2 ? N1 : N2));
        int M = N1 > N2 ? N1 : N2;
        float *CX = buf, *CY = buf + M, *TX = buf + 2 * M, *TY = buf + 3 * M, *IN = buf + 4 * M;
        float *GCX = buf + 5 * M, *GCY = buf + 6 * M, *GTX = buf + 7 * M, *GTY = buf + 8 * M;
        float *GCXi = buf + 9 * M, *GCYi = buf + 10 * M, *GTXi = buf + 11 * M, *GTYi = buf + 12 * M;
        float *NR = buf + 13 * M;
        for (int j = 0; j < N2; j++) {
            CX[j] = c2[2 * j]; CY[j] = c2[2 * j + 1]; TX[j] = t2[2 * j]; TY[j] = t2[2 * j + 1];
            float nn = sqrtf(TX[j] * TX[j] + TY[j] * TY[j]);
            IN[j] = nn > 0 ? 1.0f / nn : 0.0f;
            NR[j] = nn;
            GCX[j] = 0; GCY[j] = 0; GTX[j] = 0; GTY[j] = 0;
        }
        for (int i = 0; i < N1; i++) { GCXi[i] = 0; GCYi[i] = 0; GTXi[i] = 0; GTYi[i] = 0; }
        const float mult = self_ ? 2.0f : 1.0f;
        float etot = 0;
        for (int i = 0; i < N1; i++) {
            const float ci0 = c1[2 * i], ci1 = c1[2 * i + 1], ti0 = t1[2 * i], ti1 = t1[2 * i + 1], inv = inv1[i];
            const float nti = sqrtf(ti0 * ti0 + ti1 * ti1);
            const float ini = nti > 0 ? 1.0f / nti : 0.0f;
            int j0 = self_ ? i + 1 : lo[i], j1 = self_ ? hi[i] : hi[i];
            float e = 0, sc0 = 0, sc1 = 0, st0 = 0, st1 = 0;
            if (self_) {  /* diagonal: k = 1, w(t, t) = |t|^2, dw/dt = 2 t for both arguments */
                e += ti0 * ti0 + ti1 * ti1;
                st0 = 2 * scale * ti0; st1 = 2 * scale * ti1;
            }
            #pragma omp simd reduction(+:e,sc0,sc1,st0,st1)
            for (int j = j0; j < j1; j++) {
                float d0 = ci0 - CX[j], d1 = ci1 - CY[j];
                float f = lk_kval_f(d0 * d0 + d1 * d1, inv, kind);
                float dot = ti0 * TX[j] + ti1 * TY[j];
                float w;
                if (1) {
                    float q = dot * ini * IN[j];
                    w = q * dot;
                    
                } else {
                    w = dot;
                }
                e += mult * f * w;
            }
            etot += e;
            GCXi[i] += sc0; GCYi[i] += sc1; GTXi[i] += st0; GTYi[i] += st1;
        }
        if (0) {
            for (int i = 0; i < N1; i++) {
                gc1[2 * i] += GCXi[i]; gc1[2 * i + 1] += GCYi[i]; gt1[2 * i] += GTXi[i]; gt1[2 * i + 1] += GTYi[i];
            }
            for (int j = 0; j < N2; j++) {
                gc2[2 * j] += GCX[j]; gc2[2 * j + 1] += GCY[j]; gt2[2 * j] += GTX[j]; gt2[2 * j + 1] += GTY[j];
            }
        }
        free(buf);
        return etot;
    }
    /* kernel choice hoisted out of the loops: one specialised copy per kernel */
    LK_CLONES static float lk_curve_energy_f_10(const float* c1, const float* t1, int N1, const float* c2,
                                              const float* t2, int N2, const int* lo, const int* hi, const float* inv1,
                                              int kind, int self_, float scale, float* gc1,
                                              float* gt1, float* gc2, float* gt2) {
        if (kind == 0) { return lk_curve_energy_f_10_k(c1, t1, N1, c2, t2, N2, lo, hi, inv1, 0, self_, scale, gc1, gt1, gc2, gt2); }
        else { return lk_curve_energy_f_10_k(c1, t1, N1, c2, t2, N2, lo, hi, inv1, 1, self_, scale, gc1, gt1, gc2, gt2); }
    }
    LK_INLINE float lk_curve_energy_f_11_k(const float* c1, const float* t1, int N1, const float* c2,
                                              const float* t2, int N2, const int* lo, const int* hi, const float* inv1,
                                              const int kind, int self_, float scale, float* gc1,
                                              float* gt1, float* gc2, float* gt2) {
        float* buf = (float*)malloc(sizeof(float) * 14 * (size_t)(N1 > N2 ? N1 : N2));
        int M = N1 > N2 ? N1 : N2;
        float *CX = buf, *CY = buf + M, *TX = buf + 2 * M, *TY = buf + 3 * M, *IN = buf + 4 * M;
        float *GCX = buf + 5 * M, *GCY = buf + 6 * M, *GTX = buf + 7 * M, *GTY = buf + 8 * M;
        float *GCXi = buf + 9 * M, *GCYi = buf + 10 * M, *GTXi = buf + 11 * M, *GTYi = buf + 12 * M;
        float *NR = buf + 13 * M;
        for (int j = 0; j < N2; j++) {
            CX[j] = c2[2 * j]; CY[j] = c2[2 * j + 1]; TX[j] = t2[2 * j]; TY[j] = t2[2 * j + 1];
            float nn = sqrtf(TX[j] * TX[j] + TY[j] * TY[j]);
            IN[j] = nn > 0 ? 1.0f / nn : 0.0f;
            NR[j] = nn;
            GCX[j] = 0; GCY[j] = 0; GTX[j] = 0; GTY[j] = 0;
        }
        for (int i = 0; i < N1; i++) { GCXi[i] = 0; GCYi[i] = 0; GTXi[i] = 0; GTYi[i] = 0; }
        const float mult = self_ ? 2.0f : 1.0f;
        float etot = 0;
        for (int i = 0; i < N1; i++) {
            const float ci0 = c1[2 * i], ci1 = c1[2 * i + 1], ti0 = t1[2 * i], ti1 = t1[2 * i + 1], inv = inv1[i];
            const float nti = sqrtf(ti0 * ti0 + ti1 * ti1);
            const float ini = nti > 0 ? 1.0f / nti : 0.0f;
            int j0 = self_ ? i + 1 : lo[i], j1 = self_ ? hi[i] : hi[i];
            float e = 0, sc0 = 0, sc1 = 0, st0 = 0, st1 = 0;
            if (self_) {  /* diagonal: k = 1, w(t, t) = |t|^2, dw/dt = 2 t for both arguments */
                e += ti0 * ti0 + ti1 * ti1;
                st0 = 2 * scale * ti0; st1 = 2 * scale * ti1;
            }
            #pragma omp simd reduction(+:e,sc0,sc1,st0,st1)
            for (int j = j0; j < j1; j++) {
                float d0 = ci0 - CX[j], d1 = ci1 - CY[j];
                float f = lk_kval_f(d0 * d0 + d1 * d1, inv, kind);
                float f1 = lk_k1_f(f, inv, kind);
                float dot = ti0 * TX[j] + ti1 * TY[j];
                float w, a0, a1, b0, b1;
                if (1) {
                    float q = dot * ini * IN[j];
                    w = q * dot;
                    float qq = q * q;
                    a0 = 2 * q * TX[j] - qq * ini * ti0 * NR[j];
                    a1 = 2 * q * TY[j] - qq * ini * ti1 * NR[j];
                    b0 = 2 * q * ti0 - qq * IN[j] * TX[j] * nti;
                    b1 = 2 * q * ti1 - qq * IN[j] * TY[j] * nti;
                } else {
                    w = dot; a0 = TX[j]; a1 = TY[j]; b0 = ti0; b1 = ti1;
                }
                e += mult * f * w;
                float qd = scale * mult * 2 * f1 * w;
                sc0 += qd * d0; sc1 += qd * d1;
                GCX[j] -= qd * d0; GCY[j] -= qd * d1;
                float sf = scale * mult * f;
                st0 += sf * a0; st1 += sf * a1;
                GTX[j] += sf * b0; GTY[j] += sf * b1;
            }
            etot += e;
            GCXi[i] += sc0; GCYi[i] += sc1; GTXi[i] += st0; GTYi[i] += st1;
        }
        if (1) {
            for (int i = 0; i < N1; i++) {
                gc1[2 * i] += GCXi[i]; gc1[2 * i + 1] += GCYi[i]; gt1[2 * i] += GTXi[i]; gt1[2 * i + 1] += GTYi[i];
            }
            for (int j = 0; j < N2; j++) {
                gc2[2 * j] += GCX[j]; gc2[2 * j + 1] += GCY[j]; gt2[2 * j] += GTX[j]; gt2[2 * j + 1] += GTY[j];
            }
        }
        free(buf);
        return etot;
    }
    /* kernel choice hoisted out of the loops: one specialised copy per kernel */
    LK_CLONES static float lk_curve_energy_f_11(const float* c1, const float* t1, int N1, const float* c2,
                                              const float* t2, int N2, const int* lo, const int* hi, const float* inv1,
                                              int kind, int self_, float scale, float* gc1,
                                              float* gt1, float* gc2, float* gt2) {
        if (kind == 0) { return lk_curve_energy_f_11_k(c1, t1, N1, c2, t2, N2, lo, hi, inv1, 0, self_, scale, gc1, gt1, gc2, gt2); }
        else { return lk_curve_energy_f_11_k(c1, t1, N1, c2, t2, N2, lo, hi, inv1, 1, self_, scale, gc1, gt1, gc2, gt2); }
    }
    static float lk_curve_energy_f(const float* c1, const float* t1, int N1, const float* c2, const float* t2,
                                    int N2, const int* lo, const int* hi, const float* inv1, int kind, int vari,
                                    int self_, int grad, float scale, float* gc1, float* gt1, float* gc2, float* gt2) {
        if (vari)
            return grad ? lk_curve_energy_f_11(c1, t1, N1, c2, t2, N2, lo, hi, inv1, kind, self_, scale,
                                                 gc1, gt1, gc2, gt2)
                        : lk_curve_energy_f_10(c1, t1, N1, c2, t2, N2, lo, hi, inv1, kind, self_, scale,
                                                 gc1, gt1, gc2, gt2);
        return grad ? lk_curve_energy_f_01(c1, t1, N1, c2, t2, N2, lo, hi, inv1, kind, self_, scale,
                                             gc1, gt1, gc2, gt2)
                    : lk_curve_energy_f_00(c1, t1, N1, c2, t2, N2, lo, hi, inv1, kind, self_, scale,
                                             gc1, gt1, gc2, gt2);
    }

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

cdef inline real _energy(const real* c1, const real* t1, int N1, const real* c2, const real* t2, int N2,
                        const int* lo, const int* hi, const real* inv1, int kind, int vari, int self_, int grad,
                        real scale, real* gc1, real* gt1, real* gc2, real* gt2) noexcept nogil:
    if real is float:
        return lk_curve_energy_f(c1, t1, N1, c2, t2, N2, lo, hi, inv1, kind, vari, self_, grad, scale, gc1, gt1,
                                 gc2, gt2)
    else:
        return lk_curve_energy_d(c1, t1, N1, c2, t2, N2, lo, hi, inv1, kind, vari, self_, grad, scale, gc1, gt1,
                                 gc2, gt2)


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
