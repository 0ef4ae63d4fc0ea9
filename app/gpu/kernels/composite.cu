// Mask refinement and compositing kernels. They reproduce app/refine.py and app/compose.py:
//   smooth_state     model output -> probability -> uncertainty-weighted temporal smoothing
//   area_down_u8     frame -> 1/d size (INTER_AREA, integer factor)            } blur
//   gauss_rows_u8    uint8 -> 8.8 fixed point, Gaussian along rows, REFLECT_101 } background
//   gauss_cols_u8    8.8 fixed point -> uint8, Gaussian along columns           } (OpenCV's
//                                                                                 bit-exact path)
//   composite_fused  mask upsample (float bilinear) + threshold + feather (Gaussian, r <= 6,
//                    in shared memory) + clip + blend with the background -> composite + mask

#define TILE_W 32
#define TILE_H 8
#define RMAX 6

__device__ __forceinline__ float half_bits_to_float(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// kind: 0 = probability/matte (clip), 1 = logits (sigmoid). fp16: output is float16.
// first != 0: the state takes the new value (no history yet, or smoothing off).
extern "C" __global__ void smooth_state(
    const void* __restrict__ raw, int fp16, int kind, float* __restrict__ state, int n,
    int first, float strength)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = fp16 ? half_bits_to_float(((const unsigned short*)raw)[i]) : ((const float*)raw)[i];
    if (kind == 1) v = 1.0f / (1.0f + expf(-v));
    const float p = fminf(fmaxf(v, 0.0f), 1.0f);
    if (first) { state[i] = p; return; }
    const float eps = 1e-6f;
    const float q = fminf(fmaxf(p, eps), 1.0f - eps);
    const float r = 1.0f - q;
    float h = q * logf(q);
    h += r * logf(r);
    h *= -1.4426950408889634f;  // 1 / ln 2: entropy in bits
    h = 1.0f - h;
    h = h * h;
    const float u = (1.0f - h) * strength;
    const float prev = state[i];
    state[i] = (prev - p) * u + p;
}

// INTER_AREA by an integer factor d on BGR uint8 (OpenCV: d == 2 rounds (s + 2) >> 2,
// other factors round s / d^2 to nearest even in float).
extern "C" __global__ void area_down_u8(
    const unsigned char* __restrict__ src, int src_pitch, unsigned char* __restrict__ dst,
    int dw, int dh, int d)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dw || y >= dh) return;
    int s0 = 0, s1 = 0, s2 = 0;
    for (int j = 0; j < d; ++j) {
        const unsigned char* row = src + (size_t)(y * d + j) * src_pitch + (size_t)x * d * 3;
        for (int i = 0; i < d; ++i) {
            s0 += row[3 * i]; s1 += row[3 * i + 1]; s2 += row[3 * i + 2];
        }
    }
    unsigned char* o = dst + ((size_t)y * dw + x) * 3;
    if (d == 2) {
        o[0] = (s0 + 2) >> 2; o[1] = (s1 + 2) >> 2; o[2] = (s2 + 2) >> 2;
    } else {
        const float inv = 1.0f / (float)(d * d);
        o[0] = min(__float2int_rn((float)s0 * inv), 255);
        o[1] = min(__float2int_rn((float)s1 * inv), 255);
        o[2] = min(__float2int_rn((float)s2 * inv), 255);
    }
}

__device__ __forceinline__ int reflect101(int i, int n) {
    if (n == 1) return 0;
    while (i < 0 || i >= n) {
        if (i < 0) i = -i;
        if (i >= n) i = 2 * n - 2 - i;
    }
    return i;
}

// Row pass of OpenCV's fixed-point Gaussian for uint8: weights sum to 256 (8 fraction bits).
extern "C" __global__ void gauss_rows_u8(
    const unsigned char* __restrict__ src, unsigned short* __restrict__ dst, int w, int h,
    const int* __restrict__ weights, int k)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h) return;
    const int r = k / 2;
    int a0 = 0, a1 = 0, a2 = 0;
    const unsigned char* row = src + (size_t)y * w * 3;
    for (int i = 0; i < k; ++i) {
        const int sx = reflect101(x - r + i, w) * 3;
        const int wt = weights[i];
        a0 += wt * row[sx]; a1 += wt * row[sx + 1]; a2 += wt * row[sx + 2];
    }
    unsigned short* o = dst + ((size_t)y * w + x) * 3;
    o[0] = a0; o[1] = a1; o[2] = a2;
}

// Column pass: 8.8 x 8-bit weights -> 16 fraction bits, rounded to uint8.
extern "C" __global__ void gauss_cols_u8(
    const unsigned short* __restrict__ src, unsigned char* __restrict__ dst, int w, int h,
    const int* __restrict__ weights, int k)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h) return;
    const int r = k / 2;
    unsigned int a0 = 0, a1 = 0, a2 = 0;
    for (int j = 0; j < k; ++j) {
        const unsigned short* p = src + ((size_t)reflect101(y - r + j, h) * w + x) * 3;
        const unsigned int wt = weights[j];
        a0 += wt * p[0]; a1 += wt * p[1]; a2 += wt * p[2];
    }
    unsigned char* o = dst + ((size_t)y * w + x) * 3;
    o[0] = min((a0 + 32768u) >> 16, 255u);
    o[1] = min((a1 + 32768u) >> 16, 255u);
    o[2] = min((a2 + 32768u) >> 16, 255u);
}

// Float bilinear (cv::resize INTER_LINEAR on float32): tables hold (i0, i1, w0, w1) with
// the weights as float bits.
__device__ __forceinline__ float upsample_at(
    const float* __restrict__ low, int lw, int4 xt, int4 yt)
{
    const float a0 = __int_as_float(xt.z), a1 = __int_as_float(xt.w);
    const float b0 = __int_as_float(yt.z), b1 = __int_as_float(yt.w);
    const float* r0 = low + (size_t)yt.x * lw;
    const float* r1 = low + (size_t)yt.y * lw;
    const float h0 = r0[xt.x] * a0 + r0[xt.y] * a1;
    const float h1 = r1[xt.x] * a0 + r1[xt.y] * a1;
    return h0 * b0 + h1 * b1;
}

// mask_in != null: use that frame-size mask as is (refined on the CPU).
// bg_mode: 0 colour, 1 full-size background image, 2 blurred small image enlarged with
// OpenCV's uint8 bilinear (tables as in preprocess.cu), 3 none (the frame itself).
extern "C" __global__ void composite_fused(
    const unsigned char* __restrict__ frame, int frame_pitch, int W, int H,
    const float* __restrict__ low, int lw, const float* __restrict__ mask_in,
    const int4* __restrict__ mxtab, const int4* __restrict__ mytab,
    int soft, float threshold, int radius, const float* __restrict__ gauss,
    int bg_mode, const unsigned char* __restrict__ bg, int bg_pitch,
    const int4* __restrict__ bxtab, const int4* __restrict__ bytab,
    float c0, float c1, float c2,
    unsigned char* __restrict__ out, int out_pitch, float* __restrict__ mask_out)
{
    __shared__ float up[TILE_H + 2 * RMAX][TILE_W + 2 * RMAX];
    __shared__ float hrow[TILE_H + 2 * RMAX][TILE_W];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int x0 = blockIdx.x * TILE_W, y0 = blockIdx.y * TILE_H;
    const int x = x0 + tx, y = y0 + ty;
    float m;
    if (mask_in != nullptr) {  // mask refined elsewhere (CPU fallback): blend only
        if (x >= W || y >= H) return;
        m = mask_in[(size_t)y * W + x];
    } else if (radius > 0) {
        const int rw = TILE_W + 2 * radius, rh = TILE_H + 2 * radius;
        for (int i = ty * TILE_W + tx; i < rw * rh; i += TILE_W * TILE_H) {
            const int ry = i / rw, rx = i - ry * rw;
            const int gx = min(max(x0 - radius + rx, 0), W - 1);  // BORDER_REPLICATE
            const int gy = min(max(y0 - radius + ry, 0), H - 1);
            float v = upsample_at(low, lw, __ldg(&mxtab[gx]), __ldg(&mytab[gy]));
            if (!soft) v = v > threshold ? 1.0f : 0.0f;
            up[ry][rx] = v;
        }
        __syncthreads();
        const int k = 2 * radius + 1;
        for (int ry = ty; ry < rh; ry += TILE_H) {
            float a = 0.0f;
            for (int i = 0; i < k; ++i) a += gauss[i] * up[ry][tx + i];
            hrow[ry][tx] = a;
        }
        __syncthreads();
        if (x >= W || y >= H) return;
        float a = 0.0f;
        for (int j = 0; j < k; ++j) a += gauss[j] * hrow[ty + j][tx];
        m = a;
    } else {
        if (x >= W || y >= H) return;
        m = upsample_at(low, lw, __ldg(&mxtab[x]), __ldg(&mytab[y]));
        if (!soft) m = m > threshold ? 1.0f : 0.0f;
    }
    m = fminf(fmaxf(m, 0.0f), 1.0f);
    mask_out[(size_t)y * W + x] = m;

    const unsigned char* f = frame + (size_t)y * frame_pitch + (size_t)x * 3;
    unsigned char* o = out + (size_t)y * out_pitch + (size_t)x * 3;
    if (bg_mode == 3) {
        o[0] = f[0]; o[1] = f[1]; o[2] = f[2];
        return;
    }
    float b[3];
    if (bg_mode == 0) {
        b[0] = c0; b[1] = c1; b[2] = c2;
    } else if (bg_mode == 1) {
        const unsigned char* p = bg + (size_t)y * bg_pitch + (size_t)x * 3;
        b[0] = p[0]; b[1] = p[1]; b[2] = p[2];
    } else {
        const int4 xt = __ldg(&bxtab[x]);
        const int4 yt = __ldg(&bytab[y]);
        const unsigned char* r0 = bg + (size_t)yt.x * bg_pitch;
        const unsigned char* r1 = bg + (size_t)yt.y * bg_pitch;
#pragma unroll
        for (int c = 0; c < 3; ++c) {
            const int h0 = (int)r0[xt.x * 3 + c] * xt.z + (int)r0[xt.y * 3 + c] * xt.w;
            const int h1 = (int)r1[xt.x * 3 + c] * xt.z + (int)r1[xt.y * 3 + c] * xt.w;
            const int q = ((((h0 >> 4) * yt.z) >> 16) + (((h1 >> 4) * yt.w) >> 16) + 2) >> 2;
            b[c] = (float)min(max(q, 0), 255);
        }
    }
    const float inv = 1.0f - m;
#pragma unroll
    for (int c = 0; c < 3; ++c) {
        const float v = floorf((float)f[c] * m + b[c] * inv + 0.5f);
        o[c] = (unsigned char)fminf(fmaxf(v, 0.0f), 255.0f);
    }
}
