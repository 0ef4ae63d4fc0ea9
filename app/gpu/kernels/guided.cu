// Guided (edge-aware) mask upsampling: the arithmetic of segcam/guided.py on the GPU.
//
// guided_guide  (mask res): the frame's exact mean over each mask pixel's footprint, float32.
// guided_coef   (mask res): box means in double, 3x3 solve -> a (3) and b, double.
// guided_mean   (mask res): box means of a and b -> A/255 (3 planes) and B, float32.
// guided_apply  (frame res): bilinear enlargement of the 4 planes (cv2.resize INTER_LINEAR
//               tables, float weights), q = ((B + A0 f0) + A1 f1) + A2 f2, clip, threshold.
// gauss_rows_f32 / gauss_cols_f32: the feather (Gaussian 2r+1, border replicate) on floats.
//
// Planes are contiguous lw*lh arrays, one after the other.

__device__ __forceinline__ int clampi(int v, int lo, int hi) { return min(max(v, lo), hi); }

// gtab: lw rows (x_lo, x_hi) then lh rows (y_lo, y_hi) of the footprints.
extern "C" __global__ void guided_guide(
    const unsigned char* __restrict__ frame, int pitch, const int2* __restrict__ gtab,
    int lw, int lh, float* __restrict__ guide)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= lw || y >= lh) return;
    const int2 fx = gtab[x], fy = gtab[lw + y];
    unsigned int s0 = 0, s1 = 0, s2 = 0;
    for (int r = fy.x; r < fy.y; ++r) {
        const unsigned char* row = frame + (size_t)r * pitch;
        for (int c = fx.x; c < fx.y; ++c) {
            s0 += row[3 * c];
            s1 += row[3 * c + 1];
            s2 += row[3 * c + 2];
        }
    }
    const float count = (float)((fx.y - fx.x) * (fy.y - fy.x)) * 255.0f;
    const size_t plane = (size_t)lw * lh, i = (size_t)y * lw + x;
    guide[i] = __fdiv_rn((float)s0, count);
    guide[plane + i] = __fdiv_rn((float)s1, count);
    guide[2 * plane + i] = __fdiv_rn((float)s2, count);
}

extern "C" __global__ void guided_coef(
    const float* __restrict__ guide, const float* __restrict__ mask, int lw, int lh,
    int radius, double eps, double* __restrict__ coef)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= lw || y >= lh) return;
    const size_t plane = (size_t)lw * lh;
    double m[3] = {0, 0, 0}, mp = 0, ip[3] = {0, 0, 0}, ii[6] = {0, 0, 0, 0, 0, 0};
    for (int dy = -radius; dy <= radius; ++dy) {
        const int yy = clampi(y + dy, 0, lh - 1);
        for (int dx = -radius; dx <= radius; ++dx) {
            const size_t k = (size_t)yy * lw + clampi(x + dx, 0, lw - 1);
            const double g0 = guide[k], g1 = guide[plane + k], g2 = guide[2 * plane + k];
            const double p = mask[k];
            m[0] += g0; m[1] += g1; m[2] += g2; mp += p;
            ip[0] += g0 * p; ip[1] += g1 * p; ip[2] += g2 * p;
            ii[0] += g0 * g0; ii[1] += g0 * g1; ii[2] += g0 * g2;
            ii[3] += g1 * g1; ii[4] += g1 * g2; ii[5] += g2 * g2;
        }
    }
    const double n = (double)((2 * radius + 1) * (2 * radius + 1));
    for (int c = 0; c < 3; ++c) { m[c] /= n; ip[c] /= n; }
    mp /= n;
    for (int c = 0; c < 6; ++c) ii[c] /= n;
    const double cv0 = ip[0] - m[0] * mp, cv1 = ip[1] - m[1] * mp, cv2 = ip[2] - m[2] * mp;
    const double a00 = ii[0] - m[0] * m[0] + eps, a01 = ii[1] - m[0] * m[1];
    const double a02 = ii[2] - m[0] * m[2], a11 = ii[3] - m[1] * m[1] + eps;
    const double a12 = ii[4] - m[1] * m[2], a22 = ii[5] - m[2] * m[2] + eps;
    const double c00 = a11 * a22 - a12 * a12, c01 = a02 * a12 - a01 * a22;
    const double c02 = a01 * a12 - a02 * a11, c11 = a00 * a22 - a02 * a02;
    const double c12 = a01 * a02 - a00 * a12, c22 = a00 * a11 - a01 * a01;
    const double det = a00 * c00 + a01 * c01 + a02 * c02;
    const double x0 = (c00 * cv0 + c01 * cv1 + c02 * cv2) / det;
    const double x1 = (c01 * cv0 + c11 * cv1 + c12 * cv2) / det;
    const double x2 = (c02 * cv0 + c12 * cv1 + c22 * cv2) / det;
    const size_t i = (size_t)y * lw + x;
    coef[i] = x0;
    coef[plane + i] = x1;
    coef[2 * plane + i] = x2;
    coef[3 * plane + i] = mp - x0 * m[0] - x1 * m[1] - x2 * m[2];
}

extern "C" __global__ void guided_mean(
    const double* __restrict__ coef, int lw, int lh, int radius, float* __restrict__ ab)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= lw || y >= lh) return;
    const size_t plane = (size_t)lw * lh;
    double s[4] = {0, 0, 0, 0};
    for (int dy = -radius; dy <= radius; ++dy) {
        const int yy = clampi(y + dy, 0, lh - 1);
        for (int dx = -radius; dx <= radius; ++dx) {
            const size_t k = (size_t)yy * lw + clampi(x + dx, 0, lw - 1);
#pragma unroll
            for (int c = 0; c < 4; ++c) s[c] += coef[c * plane + k];
        }
    }
    const double n = (double)((2 * radius + 1) * (2 * radius + 1));
    const size_t i = (size_t)y * lw + x;
#pragma unroll
    for (int c = 0; c < 3; ++c) ab[c * plane + i] = (float)(s[c] / n / 255.0);
    ab[3 * plane + i] = (float)(s[3] / n);
}

// xtab[x] / ytab[y] = (i0, i1, w0 bits, w1 bits): cv2.resize INTER_LINEAR for float images.
__device__ __forceinline__ float enlarge(const float* __restrict__ p, int lw, int4 xt, int4 yt)
{
    const float a0 = __int_as_float(xt.z), a1 = __int_as_float(xt.w);
    const float b0 = __int_as_float(yt.z), b1 = __int_as_float(yt.w);
    const float* r0 = p + (size_t)yt.x * lw;
    const float* r1 = p + (size_t)yt.y * lw;
    const float h0 = __fadd_rn(__fmul_rn(r0[xt.x], a0), __fmul_rn(r0[xt.y], a1));
    const float h1 = __fadd_rn(__fmul_rn(r1[xt.x], a0), __fmul_rn(r1[xt.y], a1));
    return __fadd_rn(__fmul_rn(h0, b0), __fmul_rn(h1, b1));
}

extern "C" __global__ void guided_apply(
    const float* __restrict__ ab, int lw, int lh,
    const int4* __restrict__ xtab, const int4* __restrict__ ytab,
    const unsigned char* __restrict__ frame, int pitch, int W, int H,
    int soft, float threshold, float* __restrict__ out)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= W || y >= H) return;
    const int4 xt = __ldg(&xtab[x]), yt = __ldg(&ytab[y]);
    const size_t plane = (size_t)lw * lh;
    const unsigned char* px = frame + (size_t)y * pitch + 3 * (size_t)x;
    float q = enlarge(ab + 3 * plane, lw, xt, yt);
#pragma unroll
    for (int c = 0; c < 3; ++c) q = __fadd_rn(q, __fmul_rn((float)px[c], enlarge(ab + c * plane, lw, xt, yt)));
    q = fminf(fmaxf(q, 0.0f), 1.0f);
    if (!soft) q = q > threshold ? 1.0f : 0.0f;
    out[(size_t)y * W + x] = q;
}

// Separable Gaussian (taps g[0..2r]) with border replicate; rows then columns.
extern "C" __global__ void gauss_rows_f32(
    const float* __restrict__ src, int W, int H, const float* __restrict__ g, int r,
    float* __restrict__ dst)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= W || y >= H) return;
    const float* row = src + (size_t)y * W;
    float s = 0.0f;
    for (int k = -r; k <= r; ++k) s = __fadd_rn(s, __fmul_rn(g[k + r], row[clampi(x + k, 0, W - 1)]));
    dst[(size_t)y * W + x] = s;
}

extern "C" __global__ void gauss_cols_f32(
    const float* __restrict__ src, int W, int H, const float* __restrict__ g, int r,
    float* __restrict__ dst)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= W || y >= H) return;
    float s = 0.0f;
    for (int k = -r; k <= r; ++k) s = __fadd_rn(s, __fmul_rn(g[k + r], src[(size_t)clampi(y + k, 0, H - 1) * W + x]));
    dst[(size_t)y * W + x] = fminf(fmaxf(s, 0.0f), 1.0f);
}
