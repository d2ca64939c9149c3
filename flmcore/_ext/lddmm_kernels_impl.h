/* Generic C kernels of flmcore/_ext/lddmm_kernels.pyx, written once for a real type.
 *
 * "Template by include": the verbatim C block of lddmm_kernels.pyx includes this file twice, once per
 * precision, after defining
 *   REAL   the floating type (double / float),
 *   SFX    the name suffix (_d / _f): LK_NAME(lk_velocity) is lk_velocity_d / lk_velocity_f,
 *   EXPFN  the branch-free exponential for x <= 0 (lk_exp_d / lk_exp_f),
 *   SQRT   the square root (sqrt / sqrtf),
 * and LK_CLONES / LK_INLINE.  These four macros are #undef'd at the end of this file.
 *
 * Hot loops: point pairs i < j visited once, each row j > i as a vectorised loop over structure-of-arrays
 * scratch.  Their index is a ptrdiff_t: Python's CFLAGS carry -fwrapv, under which an int index is not an
 * affine address (it may wrap) and GCC does not vectorise the loop.  Run-time switches (kernel kind;
 * vari / grad of the curve energy) are arguments of one
 * always-inline body; the dispatchers call it with literal constants so that the compiler emits one
 * specialised copy per case with the dead branches removed. */
#if !defined(REAL) || !defined(SFX) || !defined(EXPFN) || !defined(SQRT)
#error "define REAL, SFX, EXPFN and SQRT before including lddmm_kernels_impl.h"
#endif
#ifndef LK_NAME
#define LK_CAT_(a, b) a##b
#define LK_CAT(a, b) LK_CAT_(a, b)
#define LK_NAME(n) LK_CAT(n, SFX)
#endif

static inline REAL LK_NAME(lk_kval)(REAL u, REAL inv, int kind) {
    return kind == 0 ? EXPFN(-u * inv) : (REAL)1.0 / ((REAL)1.0 + u * inv);
}
static inline REAL LK_NAME(lk_k1)(REAL f, REAL inv, int kind) { return kind == 0 ? -inv * f : -inv * f * f; }
static inline REAL LK_NAME(lk_k2)(REAL f, REAL inv, int kind) {
    return kind == 0 ? inv * inv * f : (REAL)2.0 * inv * inv * f * f * f;
}

LK_INLINE void LK_NAME(lk_velocity_k)(const REAL* x, const REAL* a, int P, const int* gend, const REAL* ginv,
                                    const int kind, REAL* v) {
    REAL* buf = (REAL*)malloc(sizeof(REAL) * 6 * (size_t)P);
    REAL *X = buf, *Y = buf + P, *AX = buf + 2 * P, *AY = buf + 3 * P, *VX = buf + 4 * P, *VY = buf + 5 * P;
    for (int i = 0; i < P; i++) {
        X[i] = x[2 * i]; Y[i] = x[2 * i + 1]; AX[i] = a[2 * i]; AY[i] = a[2 * i + 1];
        VX[i] = AX[i]; VY[i] = AY[i];
    }
    for (int i = 0; i < P; i++) {
        const REAL xi = X[i], yi = Y[i], ai0 = AX[i], ai1 = AY[i], inv = ginv[i];
        REAL s0 = 0, s1 = 0;
        const int e = gend[i];
        #pragma omp simd reduction(+:s0,s1)
        for (ptrdiff_t j = i + 1; j < e; j++) {
            REAL d0 = xi - X[j], d1 = yi - Y[j];
            REAL k = LK_NAME(lk_kval)(d0 * d0 + d1 * d1, inv, kind);
            s0 += k * AX[j]; s1 += k * AY[j];
            VX[j] += k * ai0; VY[j] += k * ai1;
        }
        VX[i] += s0; VY[i] += s1;
    }
    for (int i = 0; i < P; i++) { v[2 * i] = VX[i]; v[2 * i + 1] = VY[i]; }
    free(buf);
}
/* kernel choice hoisted out of the loops: one specialised copy per kernel */
LK_CLONES static void LK_NAME(lk_velocity)(const REAL* x, const REAL* a, int P, const int* gend, const REAL* ginv,
                                    int kind, REAL* v) {
    if (kind == 0) { LK_NAME(lk_velocity_k)(x, a, P, gend, ginv, 0, v); }
    else { LK_NAME(lk_velocity_k)(x, a, P, gend, ginv, 1, v); }
}

LK_INLINE void LK_NAME(lk_velocity_vjp_k)(const REAL* x, const REAL* a, const REAL* lam, int P, const int* gend,
                                        const REAL* ginv, const int kind, REAL h, REAL* dx, REAL* ga) {
    REAL* buf = (REAL*)malloc(sizeof(REAL) * 10 * (size_t)P);
    REAL *X = buf, *Y = buf + P, *AX = buf + 2 * P, *AY = buf + 3 * P, *LX = buf + 4 * P, *LY = buf + 5 * P;
    REAL *DX = buf + 6 * P, *DY = buf + 7 * P, *GX = buf + 8 * P, *GY = buf + 9 * P;
    for (int i = 0; i < P; i++) {
        X[i] = x[2 * i]; Y[i] = x[2 * i + 1]; AX[i] = a[2 * i]; AY[i] = a[2 * i + 1];
        LX[i] = lam[2 * i]; LY[i] = lam[2 * i + 1];
        DX[i] = 0; DY[i] = 0; GX[i] = h * LX[i]; GY[i] = h * LY[i];
    }
    for (int i = 0; i < P; i++) {
        const REAL xi = X[i], yi = Y[i], ai0 = AX[i], ai1 = AY[i], li0 = LX[i], li1 = LY[i], inv = ginv[i];
        const REAL hl0 = h * li0, hl1 = h * li1;
        REAL di0 = 0, di1 = 0, gi0 = 0, gi1 = 0;
        const int e = gend[i];
        #pragma omp simd reduction(+:di0,di1,gi0,gi1)
        for (ptrdiff_t j = i + 1; j < e; j++) {
            REAL d0 = xi - X[j], d1 = yi - Y[j];
            REAL f = LK_NAME(lk_kval)(d0 * d0 + d1 * d1, inv, kind);
            REAL f1 = LK_NAME(lk_k1)(f, inv, kind);
            REAL w = 2 * f1 * (li0 * AX[j] + li1 * AY[j] + LX[j] * ai0 + LY[j] * ai1);
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
LK_CLONES static void LK_NAME(lk_velocity_vjp)(const REAL* x, const REAL* a, const REAL* lam, int P, const int* gend,
                                        const REAL* ginv, int kind, REAL h, REAL* dx, REAL* ga) {
    if (kind == 0) { LK_NAME(lk_velocity_vjp_k)(x, a, lam, P, gend, ginv, 0, h, dx, ga); }
    else { LK_NAME(lk_velocity_vjp_k)(x, a, lam, P, gend, ginv, 1, h, dx, ga); }
}

LK_INLINE void LK_NAME(lk_ham_field_k)(const REAL* x, const REAL* p, int P, const int* gend, const REAL* ginv,
                                     const int kind, REAL* vx, REAL* vp) {
    REAL* buf = (REAL*)malloc(sizeof(REAL) * 8 * (size_t)P);
    REAL *X = buf, *Y = buf + P, *PX = buf + 2 * P, *PY = buf + 3 * P;
    REAL *VX = buf + 4 * P, *VY = buf + 5 * P, *QX = buf + 6 * P, *QY = buf + 7 * P;
    for (int i = 0; i < P; i++) {
        X[i] = x[2 * i]; Y[i] = x[2 * i + 1]; PX[i] = p[2 * i]; PY[i] = p[2 * i + 1];
        VX[i] = PX[i]; VY[i] = PY[i]; QX[i] = 0; QY[i] = 0;
    }
    for (int i = 0; i < P; i++) {
        const REAL xi = X[i], yi = Y[i], pi0 = PX[i], pi1 = PY[i], inv = ginv[i];
        REAL a0 = 0, a1 = 0, b0 = 0, b1 = 0;
        const int e = gend[i];
        #pragma omp simd reduction(+:a0,a1,b0,b1)
        for (ptrdiff_t j = i + 1; j < e; j++) {
            REAL d0 = xi - X[j], d1 = yi - Y[j];
            REAL f = LK_NAME(lk_kval)(d0 * d0 + d1 * d1, inv, kind);
            REAL f1 = LK_NAME(lk_k1)(f, inv, kind);
            a0 += f * PX[j]; a1 += f * PY[j];
            VX[j] += f * pi0; VY[j] += f * pi1;
            REAL w = -2 * f1 * (pi0 * PX[j] + pi1 * PY[j]);
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
LK_CLONES static void LK_NAME(lk_ham_field)(const REAL* x, const REAL* p, int P, const int* gend, const REAL* ginv,
                                     int kind, REAL* vx, REAL* vp) {
    if (kind == 0) { LK_NAME(lk_ham_field_k)(x, p, P, gend, ginv, 0, vx, vp); }
    else { LK_NAME(lk_ham_field_k)(x, p, P, gend, ginv, 1, vx, vp); }
}

LK_INLINE void LK_NAME(lk_ham_vjp_k)(const REAL* x, const REAL* p, const REAL* ca, const REAL* cb, int P,
                                   const int* gend, const REAL* ginv, const int kind, REAL* gx, REAL* gp) {
    REAL* buf = (REAL*)malloc(sizeof(REAL) * 12 * (size_t)P);
    REAL *X = buf, *Y = buf + P, *PX = buf + 2 * P, *PY = buf + 3 * P, *AX = buf + 4 * P, *AY = buf + 5 * P;
    REAL *BX = buf + 6 * P, *BY = buf + 7 * P, *GXX = buf + 8 * P, *GXY = buf + 9 * P;
    REAL *GPX = buf + 10 * P, *GPY = buf + 11 * P;
    for (int i = 0; i < P; i++) {
        X[i] = x[2 * i]; Y[i] = x[2 * i + 1]; PX[i] = p[2 * i]; PY[i] = p[2 * i + 1];
        AX[i] = ca[2 * i]; AY[i] = ca[2 * i + 1]; BX[i] = cb[2 * i]; BY[i] = cb[2 * i + 1];
        GXX[i] = 0; GXY[i] = 0; GPX[i] = AX[i]; GPY[i] = AY[i];
    }
    for (int i = 0; i < P; i++) {
        const REAL xi = X[i], yi = Y[i], pi0 = PX[i], pi1 = PY[i], ai0 = AX[i], ai1 = AY[i];
        const REAL bi0 = BX[i], bi1 = BY[i], inv = ginv[i];
        REAL sx0 = 0, sx1 = 0, sp0 = 0, sp1 = 0;
        const int e = gend[i];
        #pragma omp simd reduction(+:sx0,sx1,sp0,sp1)
        for (ptrdiff_t j = i + 1; j < e; j++) {
            REAL d0 = xi - X[j], d1 = yi - Y[j];
            REAL f = LK_NAME(lk_kval)(d0 * d0 + d1 * d1, inv, kind);
            REAL f1 = LK_NAME(lk_k1)(f, inv, kind), f2 = LK_NAME(lk_k2)(f, inv, kind);
            REAL g = -2 * f1, g1 = -2 * f2;
            REAL c = pi0 * PX[j] + pi1 * PY[j];
            REAL db0 = bi0 - BX[j], db1 = bi1 - BY[j];
            REAL ee = db0 * d0 + db1 * d1;
            REAL s = 2 * f1 * (ai0 * PX[j] + ai1 * PY[j] + AX[j] * pi0 + AY[j] * pi1) + 2 * g1 * c * ee;
            REAL q0 = s * d0 + g * c * db0, q1 = s * d1 + g * c * db1;
            sx0 += q0; sx1 += q1;
            GXX[j] -= q0; GXY[j] -= q1;
            REAL ge = g * ee;
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
LK_CLONES static void LK_NAME(lk_ham_vjp)(const REAL* x, const REAL* p, const REAL* ca, const REAL* cb, int P,
                                   const int* gend, const REAL* ginv, int kind, REAL* gx, REAL* gp) {
    if (kind == 0) { LK_NAME(lk_ham_vjp_k)(x, p, ca, cb, P, gend, ginv, 0, gx, gp); }
    else { LK_NAME(lk_ham_vjp_k)(x, p, ca, cb, P, gend, ginv, 1, gx, gp); }
}


/* Curve energy sum_{i, j} k(c1_i, c2_j) w(t1_i, t2_j) over paired blocks.  self_ != 0: c2 == c1, pairs
   j > i counted twice plus the diagonal; else j in [lo_i, hi_i).  Gradients times ``scale`` are added to
   g* when grad != 0.  w = t.s (currents) or (t.s)^2 / (|t||s|) (varifold).  vari, grad and kind are
   literal constants at every call site (the dispatchers below), so each inlined copy keeps only its branch. */
LK_INLINE REAL LK_NAME(lk_curve_energy_k)(const REAL* c1, const REAL* t1, int N1, const REAL* c2,
                                          const REAL* t2, int N2, const int* lo, const int* hi, const REAL* inv1,
                                          const int vari, const int grad, const int kind, int self_, REAL scale,
                                          REAL* gc1, REAL* gt1, REAL* gc2, REAL* gt2) {
    REAL* buf = (REAL*)malloc(sizeof(REAL) * 14 * (size_t)(N1 > N2 ? N1 : N2));
    int M = N1 > N2 ? N1 : N2;
    REAL *CX = buf, *CY = buf + M, *TX = buf + 2 * M, *TY = buf + 3 * M, *IN = buf + 4 * M;
    REAL *GCX = buf + 5 * M, *GCY = buf + 6 * M, *GTX = buf + 7 * M, *GTY = buf + 8 * M;
    REAL *GCXi = buf + 9 * M, *GCYi = buf + 10 * M, *GTXi = buf + 11 * M, *GTYi = buf + 12 * M;
    REAL *NR = buf + 13 * M;
    for (int j = 0; j < N2; j++) {
        CX[j] = c2[2 * j]; CY[j] = c2[2 * j + 1]; TX[j] = t2[2 * j]; TY[j] = t2[2 * j + 1];
        REAL nn = SQRT(TX[j] * TX[j] + TY[j] * TY[j]);
        IN[j] = nn > 0 ? (REAL)1.0 / nn : (REAL)0.0;
        NR[j] = nn;
        GCX[j] = 0; GCY[j] = 0; GTX[j] = 0; GTY[j] = 0;
    }
    for (int i = 0; i < N1; i++) { GCXi[i] = 0; GCYi[i] = 0; GTXi[i] = 0; GTYi[i] = 0; }
    const REAL mult = self_ ? (REAL)2.0 : (REAL)1.0;
    REAL etot = 0;
    for (int i = 0; i < N1; i++) {
        const REAL ci0 = c1[2 * i], ci1 = c1[2 * i + 1], ti0 = t1[2 * i], ti1 = t1[2 * i + 1], inv = inv1[i];
        const REAL nti = SQRT(ti0 * ti0 + ti1 * ti1);
        const REAL ini = nti > 0 ? (REAL)1.0 / nti : (REAL)0.0;
        int j0 = self_ ? i + 1 : lo[i], j1 = self_ ? hi[i] : hi[i];
        REAL e = 0, sc0 = 0, sc1 = 0, st0 = 0, st1 = 0;
        if (self_) {  /* diagonal: k = 1, w(t, t) = |t|^2, dw/dt = 2 t for both arguments */
            e += ti0 * ti0 + ti1 * ti1;
            st0 = 2 * scale * ti0; st1 = 2 * scale * ti1;
        }
        #pragma omp simd reduction(+:e,sc0,sc1,st0,st1)
        for (ptrdiff_t j = j0; j < j1; j++) {
            REAL d0 = ci0 - CX[j], d1 = ci1 - CY[j];
            REAL f = LK_NAME(lk_kval)(d0 * d0 + d1 * d1, inv, kind);
            REAL dot = ti0 * TX[j] + ti1 * TY[j];
            REAL w, a0, a1, b0, b1;
            if (vari) {
                REAL q = dot * ini * IN[j];
                w = q * dot;
                if (grad) {
                    REAL qq = q * q;
                    a0 = 2 * q * TX[j] - qq * ini * ti0 * NR[j];
                    a1 = 2 * q * TY[j] - qq * ini * ti1 * NR[j];
                    b0 = 2 * q * ti0 - qq * IN[j] * TX[j] * nti;
                    b1 = 2 * q * ti1 - qq * IN[j] * TY[j] * nti;
                }
            } else {
                w = dot; a0 = TX[j]; a1 = TY[j]; b0 = ti0; b1 = ti1;
            }
            e += mult * f * w;
            if (grad) {
                REAL f1 = LK_NAME(lk_k1)(f, inv, kind);
                REAL qd = scale * mult * 2 * f1 * w;
                sc0 += qd * d0; sc1 += qd * d1;
                GCX[j] -= qd * d0; GCY[j] -= qd * d1;
                REAL sf = scale * mult * f;
                st0 += sf * a0; st1 += sf * a1;
                GTX[j] += sf * b0; GTY[j] += sf * b1;
            }
        }
        etot += e;
        GCXi[i] += sc0; GCYi[i] += sc1; GTXi[i] += st0; GTYi[i] += st1;
    }
    if (grad) {
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
/* one specialised (and target-cloned) copy per (vari, grad); the kernel choice hoisted out of the loops */
#define LK_CURVE_ENERGY_VG(V, G)                                                                              \
    LK_CLONES static REAL LK_NAME(lk_curve_energy_##V##G)(                                                    \
            const REAL* c1, const REAL* t1, int N1, const REAL* c2, const REAL* t2, int N2, const int* lo,   \
            const int* hi, const REAL* inv1, int kind, int self_, REAL scale, REAL* gc1, REAL* gt1,           \
            REAL* gc2, REAL* gt2) {                                                                           \
        if (kind == 0) {                                                                                      \
            return LK_NAME(lk_curve_energy_k)(c1, t1, N1, c2, t2, N2, lo, hi, inv1, V, G, 0, self_, scale,   \
                                              gc1, gt1, gc2, gt2);                                            \
        }                                                                                                     \
        return LK_NAME(lk_curve_energy_k)(c1, t1, N1, c2, t2, N2, lo, hi, inv1, V, G, 1, self_, scale,       \
                                          gc1, gt1, gc2, gt2);                                                \
    }
LK_CURVE_ENERGY_VG(0, 0)
LK_CURVE_ENERGY_VG(0, 1)
LK_CURVE_ENERGY_VG(1, 0)
LK_CURVE_ENERGY_VG(1, 1)
#undef LK_CURVE_ENERGY_VG
static REAL LK_NAME(lk_curve_energy)(const REAL* c1, const REAL* t1, int N1, const REAL* c2, const REAL* t2,
                                     int N2, const int* lo, const int* hi, const REAL* inv1, int kind, int vari,
                                     int self_, int grad, REAL scale, REAL* gc1, REAL* gt1, REAL* gc2, REAL* gt2) {
    if (vari)
        return grad ? LK_NAME(lk_curve_energy_11)(c1, t1, N1, c2, t2, N2, lo, hi, inv1, kind, self_, scale,
                                                  gc1, gt1, gc2, gt2)
                    : LK_NAME(lk_curve_energy_10)(c1, t1, N1, c2, t2, N2, lo, hi, inv1, kind, self_, scale,
                                                  gc1, gt1, gc2, gt2);
    return grad ? LK_NAME(lk_curve_energy_01)(c1, t1, N1, c2, t2, N2, lo, hi, inv1, kind, self_, scale,
                                              gc1, gt1, gc2, gt2)
                : LK_NAME(lk_curve_energy_00)(c1, t1, N1, c2, t2, N2, lo, hi, inv1, kind, self_, scale,
                                              gc1, gt1, gc2, gt2);
}

#undef REAL
#undef SFX
#undef EXPFN
#undef SQRT
