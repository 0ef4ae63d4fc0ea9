// Mask refinement and compositing kernels. They reproduce app/refine.py and app/compose.py:
//   smooth_state     model output -> probability -> uncertainty-weighted temporal smoothing
//   area_down_u8     frame -> 1/d size (exact 2x2 INTER_AREA halvings)         } blur
//   gauss_rows_u8    uint8 -> 8.8 fixed point, Gaussian along rows, REFLECT_101 } background
//   gauss_cols_u8    8.8 fixed point -> uint8, Gaussian along columns           } (OpenCV's
//                                                                                 bit-exact path)
//   blur_small_u8    the three above in one kernel (shared-memory tiles), radius <= 16
//   composite_fused  mask upsample (float bilinear) + threshold + feather (Gaussian, r <= 6,
//                    in shared memory) + clip and snap + blend with the background
//                    -> composite + mask
//   prep_step        soft masks: the horizontal half of upsample + feather per model row
//   prep_blur        prep_step's blocks and blur_small_u8's (with bgh) in one launch
//   composite_rows   their vertical halves per pixel + clip and snap + blend (no shared
//                    memory)

#ifndef BW
#define BW 32              // threads per block along x
#endif
#ifndef BH
#define BH 8               // threads per block along y
#endif
#define BLUR_BW 32         // blur_small_u8's block
#define BLUR_BH 8
#define PX 4               // pixels per thread along x (vector loads/stores)
#define TILE_W (BW * PX)   // composite tile: 128 x 8 pixels
#define TILE_H BH
#define RMAX 6             // feather radius handled in shared memory
#define BR_MAX 16          // blur_small_u8: largest Gaussian radius in shared memory
#define UP_W (TILE_W + 2 * RMAX)  // 140 floats: rows of 16-byte multiples for float4 reads
#define LMAX 8             // low-res mask rows a tile may span on the separable path
#ifndef MIN_BLOCKS
#define MIN_BLOCKS 6       // 40 registers at 256 threads: 6 blocks (75% occupancy) per SM
#endif
#define LB 6               // small-background rows a tile may span (shared horizontal pass)

// The refined mask's last step (app/refine.py): clip to [0, 1], then values within SNAP
// (1/512) of 0 or 1 become exactly 0 or 1.
#define SNAP (1.0f / 512.0f)
__device__ __forceinline__ float clip_snap(float m) {
    m = fminf(fmaxf(m, 0.0f), 1.0f);
    return m <= SNAP ? 0.0f : (m >= 1.0f - SNAP ? 1.0f : m);
}

// INTER_AREA 1/4 as app/compose.py's shrink does it: two exact 2x2 halvings, each
// (a + b + c + d + 2) >> 2, from the 4x4 block's 16 values (row-major v[r * 4 + c]).
__device__ __forceinline__ int area4_halvings(const int* v) {
    const int q0 = (v[0] + v[1] + v[4] + v[5] + 2) >> 2;
    const int q1 = (v[2] + v[3] + v[6] + v[7] + 2) >> 2;
    const int q2 = (v[8] + v[9] + v[12] + v[13] + 2) >> 2;
    const int q3 = (v[10] + v[11] + v[14] + v[15] + 2) >> 2;
    return (q0 + q1 + q2 + q3 + 2) >> 2;
}

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

// INTER_AREA by d in {2, 4} on BGR uint8: d == 2 is OpenCV's (s + 2) >> 2, d == 4 two
// such halvings (area4_halvings).
extern "C" __global__ void area_down_u8(
    const unsigned char* __restrict__ src, int src_pitch, unsigned char* __restrict__ dst,
    int dw, int dh, int d)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dw || y >= dh) return;
    unsigned char* o = dst + ((size_t)y * dw + x) * 3;
    for (int c = 0; c < 3; ++c) {
        int v[16];
        for (int j = 0; j < d; ++j) {
            const unsigned char* row = src + (size_t)(y * d + j) * src_pitch + (size_t)x * d * 3;
            for (int i = 0; i < d; ++i) v[j * 4 + i] = row[3 * i + c];
        }
        o[c] = d == 2 ? (v[0] + v[1] + v[4] + v[5] + 2) >> 2 : area4_halvings(v);
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

__device__ __forceinline__ unsigned int byte_of(uint3 w, int i) {
    const unsigned int word = i < 4 ? w.x : (i < 8 ? w.y : w.z);
    return (word >> (8 * (i & 3))) & 0xffu;
}

// 1/d shrink (d = 1: a copy; 2, 4: exact 2x2 halvings) + OpenCV's fixed-point Gaussian
// (REFLECT_101 at the reduced size) in one kernel: each block shrinks its tile plus halo
// into shared memory, filters rows, then columns. Output: the blurred small image, and with
// bgh != null also OpenCV's horizontal uint8 enlargement of its rows (three planes of
// (h0 >> 4) per small row, row pitch `pitch`) for the output columns x in
// [own[bx], own[bx + 1]) whose left sample lies in this block's tile (one more blurred
// column on the right covers their right sample).
#define AREA_E 4           // blur_tile: area entries per thread with their loads in flight

__device__ __forceinline__ void blur_tile(
    const unsigned char* __restrict__ src, int src_pitch, int d,
    unsigned char* __restrict__ dst, int sw, int sh,
    const int* __restrict__ weights, int k,
    const int* __restrict__ own, const int4* __restrict__ bxtab,
    unsigned short* __restrict__ bgh, int pitch, int bx, int by)
{
    __shared__ unsigned char area[BLUR_BH + 2 * BR_MAX][BLUR_BW + 1 + 2 * BR_MAX][3];
    __shared__ unsigned short hr[BLUR_BH + 2 * BR_MAX][BLUR_BW + 1][3];
    __shared__ unsigned char bl[BLUR_BH][BLUR_BW + 1][3];
    __shared__ int wt[2 * BR_MAX + 1];
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * BLUR_BW + tx;
    const int r = k / 2;
    const int x0 = bx * BLUR_BW, y0 = by * BLUR_BH;
    const int cols = bgh != nullptr ? BLUR_BW + 1 : BLUR_BW;
    const int rw = cols + 2 * r, rh = BLUR_BH + 2 * r;
    if (tid < k) wt[tid] = weights[tid];
    const int total = rw * rh;
    if (d == 4 && (src_pitch & 3) == 0) {
        // 4 pixels = 12 aligned bytes = 3 words; AREA_E entries' loads issued together
        for (int i0 = tid; i0 < total; i0 += AREA_E * BLUR_BW * BLUR_BH) {
            uint3 w[AREA_E][4];
#pragma unroll
            for (int e = 0; e < AREA_E; ++e) {
                const int i = i0 + e * BLUR_BW * BLUR_BH;
                if (i < total) {
                    const int ry = i / rw, rx = i - ry * rw;
                    const int sx = reflect101(x0 - r + rx, sw), sy = reflect101(y0 - r + ry, sh);
#pragma unroll
                    for (int j = 0; j < 4; ++j)
                        w[e][j] = *(const uint3*)(src + (size_t)(sy * 4 + j) * src_pitch +
                                                  (size_t)sx * 12);
                }
            }
#pragma unroll
            for (int e = 0; e < AREA_E; ++e) {
                const int i = i0 + e * BLUR_BW * BLUR_BH;
                if (i < total) {
                    const int ry = i / rw, rx = i - ry * rw;
#pragma unroll
                    for (int c = 0; c < 3; ++c) {
                        int v[16];
#pragma unroll
                        for (int j = 0; j < 4; ++j) {
#pragma unroll
                            for (int q = 0; q < 4; ++q) v[j * 4 + q] = byte_of(w[e][j], 3 * q + c);
                        }
                        area[ry][rx][c] = area4_halvings(v);
                    }
                }
            }
        }
    } else {
        for (int i = tid; i < total; i += BLUR_BW * BLUR_BH) {
            const int ry = i / rw, rx = i - ry * rw;
            const int sx = reflect101(x0 - r + rx, sw), sy = reflect101(y0 - r + ry, sh);
            for (int c = 0; c < 3; ++c) {
                int v[16];
                for (int j = 0; j < d; ++j) {
                    const unsigned char* p =
                        src + (size_t)(sy * d + j) * src_pitch + (size_t)sx * d * 3;
                    for (int q = 0; q < d; ++q) v[j * 4 + q] = p[3 * q + c];
                }
                int a = v[0];
                if (d == 2) a = (v[0] + v[1] + v[4] + v[5] + 2) >> 2;
                else if (d == 4) a = area4_halvings(v);
                area[ry][rx][c] = a;
            }
        }
    }
    __syncthreads();
    for (int ry = ty; ry < rh; ry += BLUR_BH) {
        for (int cx = tx; cx < cols; cx += BLUR_BW) {
            int a0 = 0, a1 = 0, a2 = 0;
            for (int i = 0; i < k; ++i) {
                const int w = wt[i];
                a0 += w * area[ry][cx + i][0]; a1 += w * area[ry][cx + i][1];
                a2 += w * area[ry][cx + i][2];
            }
            hr[ry][cx][0] = a0; hr[ry][cx][1] = a1; hr[ry][cx][2] = a2;
        }
    }
    __syncthreads();
    const int y = y0 + ty;
    for (int cx = tx; cx < cols; cx += BLUR_BW) {
        unsigned int a0 = 0, a1 = 0, a2 = 0;
        for (int j = 0; j < k; ++j) {
            const unsigned int w = wt[j];
            a0 += w * hr[ty + j][cx][0]; a1 += w * hr[ty + j][cx][1];
            a2 += w * hr[ty + j][cx][2];
        }
        const unsigned char v0 = min((a0 + 32768u) >> 16, 255u);
        const unsigned char v1 = min((a1 + 32768u) >> 16, 255u);
        const unsigned char v2 = min((a2 + 32768u) >> 16, 255u);
        bl[ty][cx][0] = v0; bl[ty][cx][1] = v1; bl[ty][cx][2] = v2;
        const int x = x0 + cx;
        if (cx < BLUR_BW && x < sw && y < sh) {
            unsigned char* o = dst + ((size_t)y * sw + x) * 3;
            o[0] = v0; o[1] = v1; o[2] = v2;
        }
    }
    if (bgh == nullptr) return;
    __syncthreads();
    if (y >= sh) return;
    const int xe = own[bx + 1];
    for (int x = own[bx] + tx; x < xe; x += BLUR_BW) {
        const int4 xt = __ldg(&bxtab[x]);
        const int i0 = xt.x - x0, i1 = xt.y - x0;
#pragma unroll
        for (int c = 0; c < 3; ++c)
            bgh[((size_t)y * 3 + c) * pitch + x] =
                (unsigned short)(((int)bl[ty][i0][c] * xt.z + (int)bl[ty][i1][c] * xt.w) >> 4);
    }
}

extern "C" __global__ void __launch_bounds__(BLUR_BW * BLUR_BH) blur_small_u8(
    const unsigned char* __restrict__ src, int src_pitch, int d,
    unsigned char* __restrict__ dst, int sw, int sh,
    const int* __restrict__ weights, int k,
    const int* __restrict__ own, const int4* __restrict__ bxtab,
    unsigned short* __restrict__ bgh, int pitch)
{
    blur_tile(src, src_pitch, d, dst, sw, sh, weights, k, own, bxtab, bgh, pitch, blockIdx.x,
              blockIdx.y);
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
    const float h0 = __ldg(&r0[xt.x]) * a0 + __ldg(&r0[xt.y]) * a1;
    const float h1 = __ldg(&r1[xt.x]) * a0 + __ldg(&r1[xt.y]) * a1;
    return h0 * b0 + h1 * b1;
}

// OpenCV's vertical uint8 bilinear step on two horizontal sums (value * 2048).
__device__ __forceinline__ float vpass(int h0, int h1, int4 yt) {
    const int q = ((((h0 >> 4) * yt.z) >> 16) + (((h1 >> 4) * yt.w) >> 16) + 2) >> 2;
    return (float)min(max(q, 0), 255);
}

// OpenCV's uint8 bilinear sample of channel c (tables as in preprocess.cu).
__device__ __forceinline__ float small_bg_at(
    const unsigned char* __restrict__ bg, int bg_pitch, int4 xt, int4 yt, int c)
{
    const unsigned char* r0 = bg + (size_t)yt.x * bg_pitch;
    const unsigned char* r1 = bg + (size_t)yt.y * bg_pitch;
    const int h0 = (int)r0[xt.x * 3 + c] * xt.z + (int)r0[xt.y * 3 + c] * xt.w;
    const int h1 = (int)r1[xt.x * 3 + c] * xt.z + (int)r1[xt.y * 3 + c] * xt.w;
    const int q = ((((h0 >> 4) * yt.z) >> 16) + (((h1 >> 4) * yt.w) >> 16) + 2) >> 2;
    return (float)min(max(q, 0), 255);
}

__device__ __forceinline__ unsigned char blend1(float f, float b, float m, float inv) {
    const float v = floorf(f * m + b * inv + 0.5f);
    return (unsigned char)fminf(fmaxf(v, 0.0f), 255.0f);
}

// Feather of one tile: rows then columns of a (2R+1)-tap Gaussian, in shared memory.
// Columns are strided across the warp (no bank conflicts); the result lands in up[0..TILE_H).
template <int R>
__device__ __forceinline__ void feather_tile(
    float (*up)[UP_W], float (*hrow)[TILE_W], const float* g, int tx, int ty)
{
    constexpr int K = 2 * R + 1;
    constexpr int RH = TILE_H + 2 * R;
    for (int ry = ty; ry < RH; ry += BH) {
#pragma unroll
        for (int j = 0; j < PX; ++j) {
            const int cx = tx + BW * j;
            float a = 0.0f;
#pragma unroll
            for (int i = 0; i < K; ++i) a += g[i] * up[ry][cx + i];
            hrow[ry][cx] = a;
        }
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < PX; ++j) {
        const int cx = tx + BW * j;
        float a = 0.0f;
#pragma unroll
        for (int i = 0; i < K; ++i) a += g[i] * hrow[ty + i][cx];
        up[ty][cx] = a;
    }
    __syncthreads();
}

// mask_in != null: use that frame-size mask as is (refined on the CPU).
// bg_mode: 0 colour, 1 full-size background image, 2 blurred small image enlarged with
// OpenCV's uint8 bilinear (tables as in preprocess.cu), 3 none (the frame itself).
// Each thread owns 4 consecutive pixels of one row; with 4-byte aligned rows (width a
// multiple of 4) they move as 32-bit words and one float4.
extern "C" __global__ void __launch_bounds__(BW * BH, MIN_BLOCKS) composite_fused(
    const unsigned char* __restrict__ frame, int frame_pitch, int W, int H,
    const float* __restrict__ low, int lw, const float* __restrict__ mask_in,
    const int4* __restrict__ mxtab, const int4* __restrict__ mytab,
    int soft, float threshold, int radius, const float* __restrict__ gauss,
    int bg_mode, const unsigned char* __restrict__ bg, int bg_pitch,
    const int4* __restrict__ bxtab, const int4* __restrict__ bytab,
    float c0, float c1, float c2,
    unsigned char* __restrict__ out, int out_pitch, float* __restrict__ mask_out)
{
    __shared__ __align__(16) float up[TILE_H + 2 * RMAX][UP_W];
    __shared__ float hrow[TILE_H + 2 * RMAX][TILE_W];
    __shared__ float hl[LMAX][UP_W];
    __shared__ float g[2 * RMAX + 1];
    __shared__ __align__(16) int hs[LB][3][TILE_W];
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * BW + tx;
    const int x0 = blockIdx.x * TILE_W, y0 = blockIdx.y * TILE_H;
    const int y = y0 + ty;
    const int xs = x0 + tx * PX;  // this thread's first pixel
    float m[PX];
    // Blurred small background: OpenCV's horizontal uint8 pass once per small row of the
    // tile into shared memory (the vertical pass runs per pixel in the blend).
    int hs_r0 = 0;
    bool use_hs = false;
    if (bg_mode == 2) {
        hs_r0 = __ldg(&bytab[y0]).x;
        const int hs_r1 = __ldg(&bytab[min(y0 + TILE_H, H) - 1]).y;
        use_hs = hs_r1 - hs_r0 + 1 <= LB;
        if (use_hs) {
            for (int l = ty; l <= hs_r1 - hs_r0; l += BH) {
                const unsigned char* row = bg + (size_t)(hs_r0 + l) * bg_pitch;
                for (int cx = tx; cx < TILE_W; cx += BW) {
                    const int4 xt = __ldg(&bxtab[min(x0 + cx, W - 1)]);
#pragma unroll
                    for (int c = 0; c < 3; ++c)
                        hs[l][c][cx] = (int)row[xt.x * 3 + c] * xt.z +
                                       (int)row[xt.y * 3 + c] * xt.w;
                }
            }
        }
        __syncthreads();
    }
    if (mask_in == nullptr && radius >= 0 && radius <= RMAX) {
        const int rw = TILE_W + 2 * radius, rh = TILE_H + 2 * radius;
        if (tid < 2 * radius + 1) g[tid] = gauss[tid];
        // Low-res rows this tile needs (the tables are monotonic in y).
        const int gy_lo = max(y0 - radius, 0), gy_hi = min(y0 + TILE_H + radius, H) - 1;
        const int l0 = __ldg(&mytab[gy_lo]).x, l1 = __ldg(&mytab[gy_hi]).y;
        if (l1 - l0 + 1 <= LMAX) {
            // Separable: horizontal interpolation once per low-res row, then vertical.
            for (int l = ty; l <= l1 - l0; l += BH) {
                const float* row = low + (size_t)(l0 + l) * lw;
                for (int rx = tx; rx < rw; rx += BW) {
                    const int gx = min(max(x0 - radius + rx, 0), W - 1);  // BORDER_REPLICATE
                    const int4 xt = __ldg(&mxtab[gx]);
                    hl[l][rx] = __ldg(&row[xt.x]) * __int_as_float(xt.z) +
                                __ldg(&row[xt.y]) * __int_as_float(xt.w);
                }
            }
            __syncthreads();
            for (int ry = ty; ry < rh; ry += BH) {
                const int gy = min(max(y0 - radius + ry, 0), H - 1);
                const int4 yt = __ldg(&mytab[gy]);
                const float b0 = __int_as_float(yt.z), b1 = __int_as_float(yt.w);
                const float* h0 = hl[yt.x - l0];
                const float* h1 = hl[yt.y - l0];
                for (int rx = tx; rx < rw; rx += BW) {
                    float v = h0[rx] * b0 + h1[rx] * b1;
                    if (!soft) v = v > threshold ? 1.0f : 0.0f;
                    up[ry][rx] = v;
                }
            }
        } else {  // many low-res rows per tile (model output larger than the frame)
            for (int ry = ty; ry < rh; ry += BH) {
                const int gy = min(max(y0 - radius + ry, 0), H - 1);
                const int4 yt = __ldg(&mytab[gy]);
                for (int rx = tx; rx < rw; rx += BW) {
                    const int gx = min(max(x0 - radius + rx, 0), W - 1);
                    float v = upsample_at(low, lw, __ldg(&mxtab[gx]), yt);
                    if (!soft) v = v > threshold ? 1.0f : 0.0f;
                    up[ry][rx] = v;
                }
            }
        }
        __syncthreads();
        switch (radius) {
            case 0: break;
            case 1: feather_tile<1>(up, hrow, g, tx, ty); break;
            case 2: feather_tile<2>(up, hrow, g, tx, ty); break;
            case 3: feather_tile<3>(up, hrow, g, tx, ty); break;
            case 4: feather_tile<4>(up, hrow, g, tx, ty); break;
            case 5: feather_tile<5>(up, hrow, g, tx, ty); break;
            default: feather_tile<6>(up, hrow, g, tx, ty); break;
        }
        const float4 mv = *(const float4*)&up[ty][tx * PX];
        m[0] = mv.x; m[1] = mv.y; m[2] = mv.z; m[3] = mv.w;
    } else {
        if (y >= H) return;
#pragma unroll
        for (int j = 0; j < PX; ++j) {
            const int x = min(xs + j, W - 1);
            float v;
            if (mask_in != nullptr) {
                v = mask_in[(size_t)y * W + x];
            } else {
                v = upsample_at(low, lw, __ldg(&mxtab[x]), __ldg(&mytab[y]));
                if (!soft) v = v > threshold ? 1.0f : 0.0f;
            }
            m[j] = v;
        }
    }
    if (y >= H || xs >= W) return;
#pragma unroll
    for (int j = 0; j < PX; ++j) m[j] = clip_snap(m[j]);

    const unsigned char* frow = frame + (size_t)y * frame_pitch;
    unsigned char* orow = out + (size_t)y * out_pitch;
    float* mrow = mask_out + (size_t)y * W;
    const bool vec = ((W & 3) == 0) && ((frame_pitch & 3) == 0) && ((out_pitch & 3) == 0) &&
                     (bg_mode != 1 || (bg_pitch & 3) == 0);
    if (vec) {  // 4 whole pixels: 12 bytes in, 12 bytes out, one float4 of mask
        *(float4*)(mrow + xs) = make_float4(m[0], m[1], m[2], m[3]);
        const uint3 fw = *(const uint3*)(frow + (size_t)xs * 3);  // 4-byte aligned words
        if (bg_mode == 3) {
            *(uint3*)(orow + (size_t)xs * 3) = fw;
            return;
        }
        float bf[12];
        if (bg_mode == 0) {
#pragma unroll
            for (int j = 0; j < PX; ++j) { bf[3*j] = c0; bf[3*j+1] = c1; bf[3*j+2] = c2; }
        } else if (bg_mode == 1) {
            const uint3 bw = *(const uint3*)(bg + (size_t)y * bg_pitch + (size_t)xs * 3);
#pragma unroll
            for (int i = 0; i < 12; ++i) bf[i] = (float)byte_of(bw, i);
        } else if (use_hs) {
            const int4 yt = __ldg(&bytab[y]);
#pragma unroll
            for (int c = 0; c < 3; ++c) {
                const int4 a = *(const int4*)&hs[yt.x - hs_r0][c][tx * PX];
                const int4 b = *(const int4*)&hs[yt.y - hs_r0][c][tx * PX];
                bf[c] = vpass(a.x, b.x, yt);
                bf[3 + c] = vpass(a.y, b.y, yt);
                bf[6 + c] = vpass(a.z, b.z, yt);
                bf[9 + c] = vpass(a.w, b.w, yt);
            }
        } else {
            const int4 yt = __ldg(&bytab[y]);
#pragma unroll
            for (int j = 0; j < PX; ++j) {
                const int4 xt = __ldg(&bxtab[xs + j]);
#pragma unroll
                for (int c = 0; c < 3; ++c) bf[3 * j + c] = small_bg_at(bg, bg_pitch, xt, yt, c);
            }
        }
        unsigned int ow[3] = {0u, 0u, 0u};
#pragma unroll
        for (int i = 0; i < 12; ++i) {
            const int j = i / 3;
            const unsigned int v = blend1((float)byte_of(fw, i), bf[i], m[j], 1.0f - m[j]);
            ow[i >> 2] |= v << (8 * (i & 3));
        }
        *(uint3*)(orow + (size_t)xs * 3) = make_uint3(ow[0], ow[1], ow[2]);
        return;
    }
    for (int j = 0; j < PX; ++j) {  // odd widths / pitches: pixel by pixel
        const int x = xs + j;
        if (x >= W) break;
        mrow[x] = m[j];
        const unsigned char* f = frow + (size_t)x * 3;
        unsigned char* o = orow + (size_t)x * 3;
        if (bg_mode == 3) { o[0] = f[0]; o[1] = f[1]; o[2] = f[2]; continue; }
        float b[3];
        if (bg_mode == 0) {
            b[0] = c0; b[1] = c1; b[2] = c2;
        } else if (bg_mode == 1) {
            const unsigned char* p = bg + (size_t)y * bg_pitch + (size_t)x * 3;
            b[0] = p[0]; b[1] = p[1]; b[2] = p[2];
        } else {
            const int4 xt = __ldg(&bxtab[x]);
            const int4 yt = __ldg(&bytab[y]);
            for (int c = 0; c < 3; ++c) b[c] = small_bg_at(bg, bg_pitch, xt, yt, c);
        }
        const float inv = 1.0f - m[j];
        for (int c = 0; c < 3; ++c) o[c] = blend1((float)f[c], b[c], m[j], inv);
    }
}

// ---------------------------------------------------------------------------------------
// Row-step path (soft masks). Upsample and feather are linear and separable, so the
// horizontal half of both runs once per model row in rows_step (lh x W floats) and the
// full-size kernel composite_rows does the vertical half per pixel: the mask of output
// row y is sum_k vw[y][k] * hf[base(y) + k] (vertical upsample weights convolved with the
// feather taps, combined on the host). The blurred small background is enlarged the same
// way: OpenCV's horizontal uint8 pass per small row in blur_small_u8 (bgh), its vertical
// pass per pixel.
#define NW 8               // composite_rows: most model rows one output row may combine

#define RPB 8              // model rows per mask-row block
#define MR_T (BW * BH)     // mask-row block: 256 threads, 256 output columns

// RPB model rows -> hf: horizontal upsample, then the feather's taps (BORDER_REPLICATE).
__device__ __forceinline__ void mask_rows_tile(
    const float* __restrict__ low, int lw, int lh, const int4* __restrict__ mxtab, int W,
    int radius, const float* __restrict__ gauss, float* __restrict__ hf, int pitch,
    int bx, int by, int tid)
{
    __shared__ float hu[RPB][MR_T + 2 * RMAX];
    __shared__ float g[2 * RMAX + 1];
    const int x0 = bx * MR_T, l0 = by * RPB;
    const int nr = min(RPB, lh - l0);
    if (tid < 2 * radius + 1) g[tid] = gauss[tid];
    for (int i = tid; i < MR_T + 2 * radius; i += MR_T) {
        const int gx = min(max(x0 - radius + i, 0), W - 1);
        const int4 xt = __ldg(&mxtab[gx]);
        const float a0 = __int_as_float(xt.z), a1 = __int_as_float(xt.w);
#pragma unroll
        for (int r = 0; r < RPB; ++r) {
            if (r < nr) {
                const float* row = low + (size_t)(l0 + r) * lw;
                hu[r][i] = __ldg(&row[xt.x]) * a0 + __ldg(&row[xt.y]) * a1;
            }
        }
    }
    __syncthreads();
    const int x = x0 + tid;
    if (x >= W) return;
    for (int r = 0; r < nr; ++r) {
        float a = 0.0f;
        if (radius == 0) {
            a = hu[r][tid];
        } else {
            for (int i = 0; i <= 2 * radius; ++i) a += g[i] * hu[r][tid + i];
        }
        hf[(size_t)(l0 + r) * pitch + x] = a;
    }
}

// Soft mask rows alone (colour, image, none backgrounds). Block (BW, BH).
extern "C" __global__ void __launch_bounds__(MR_T) prep_step(
    const float* __restrict__ low, int lw, int lh, const int4* __restrict__ mxtab, int W,
    int radius, const float* __restrict__ gauss, float* __restrict__ hf, int pitch)
{
    mask_rows_tile(low, lw, lh, mxtab, W, radius, gauss, hf, pitch, blockIdx.x, blockIdx.y,
                   threadIdx.y * BW + threadIdx.x);
}

// Blur background: blur tiles (blockIdx.y < blur_ty, blockIdx.x < blur_tx, see blur_tile)
// and mask-row blocks (the rest) in one launch: the two jobs are independent.
extern "C" __global__ void __launch_bounds__(MR_T) prep_blur(
    const float* __restrict__ low, int lw, int lh, const int4* __restrict__ mxtab, int W,
    int radius, const float* __restrict__ gauss, float* __restrict__ hf, int pitch,
    int mask_tx, int blur_tx, int blur_ty,
    const unsigned char* __restrict__ src, int src_pitch, int d,
    unsigned char* __restrict__ dst, int sw, int sh,
    const int* __restrict__ weights, int k,
    const int* __restrict__ own, const int4* __restrict__ bxtab, unsigned short* __restrict__ bgh)
{
    const int bx = blockIdx.x, by = blockIdx.y;
    if (by < blur_ty) {
        if (bx < blur_tx)
            blur_tile(src, src_pitch, d, dst, sw, sh, weights, k, own, bxtab, bgh, pitch, bx, by);
    } else if (bx < mask_tx) {
        mask_rows_tile(low, lw, lh, mxtab, W, radius, gauss, hf, pitch, bx, by - blur_ty,
                       threadIdx.y * BW + threadIdx.x);
    }
}

__device__ __forceinline__ float vpass_shifted(unsigned int h0, unsigned int h1, int4 yt) {
    const int q = ((((int)h0 * yt.z) >> 16) + (((int)h1 * yt.w) >> 16) + 2) >> 2;
    return (float)min(max(q, 0), 255);
}

// vtab: per output row 12 words: base model row, count n (<= NW), NW float weights, 2 spare.
// bg_mode as composite_fused; mode 2 reads bgh (blur_small_u8) with the y table bytab.
// No shared memory and no barrier: every load is issued up front.
extern "C" __global__ void __launch_bounds__(BW * BH) composite_rows(
    const unsigned char* __restrict__ frame, int frame_pitch, int W, int H,
    const float* __restrict__ hf, int pitch, const int4* __restrict__ vtab,
    int bg_mode, const unsigned char* __restrict__ bg, int bg_pitch,
    const unsigned short* __restrict__ bgh, const int4* __restrict__ bytab,
    float c0, float c1, float c2,
    unsigned char* __restrict__ out, int out_pitch, float* __restrict__ mask_out)
{
    const int xs = (blockIdx.x * BW + threadIdx.x) * PX;
    const int y = blockIdx.y * BH + threadIdx.y;
    if (y >= H || xs >= W) return;
    const int4 t0 = __ldg(&vtab[3 * y]);
    const int4 t1 = __ldg(&vtab[3 * y + 1]);
    const int4 t2 = __ldg(&vtab[3 * y + 2]);
    const float wk[NW] = {__int_as_float(t0.z), __int_as_float(t0.w), __int_as_float(t1.x),
                          __int_as_float(t1.y), __int_as_float(t1.z), __int_as_float(t1.w),
                          __int_as_float(t2.x), __int_as_float(t2.y)};
    const int base = t0.x, n = t0.y;
    const float* h0 = hf + (size_t)base * pitch;
    const unsigned char* frow = frame + (size_t)y * frame_pitch;
    unsigned char* orow = out + (size_t)y * out_pitch;
    float* mrow = mask_out + (size_t)y * W;
    const bool vec = ((W & 3) == 0) && ((frame_pitch & 3) == 0) && ((out_pitch & 3) == 0) &&
                     (bg_mode != 1 || (bg_pitch & 3) == 0);
    if (vec) {
        const uint3 fw = *(const uint3*)(frow + (size_t)xs * 3);
        uint2 ga[3], gb[3];
        int4 yt = make_int4(0, 0, 0, 0);
        if (bg_mode == 2) {
            yt = __ldg(&bytab[y]);
#pragma unroll
            for (int c = 0; c < 3; ++c) {
                ga[c] = __ldg((const uint2*)(bgh + ((size_t)yt.x * 3 + c) * pitch + xs));
                gb[c] = __ldg((const uint2*)(bgh + ((size_t)yt.y * 3 + c) * pitch + xs));
            }
        }
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
        for (int k = 0; k < NW; ++k) {
            if (k < n) {
                const float4 v = __ldg((const float4*)(h0 + (size_t)k * pitch + xs));
                acc.x += wk[k] * v.x; acc.y += wk[k] * v.y;
                acc.z += wk[k] * v.z; acc.w += wk[k] * v.w;
            }
        }
        float m[PX] = {acc.x, acc.y, acc.z, acc.w};
#pragma unroll
        for (int j = 0; j < PX; ++j) m[j] = clip_snap(m[j]);
        *(float4*)(mrow + xs) = make_float4(m[0], m[1], m[2], m[3]);
        if (bg_mode == 3) {
            *(uint3*)(orow + (size_t)xs * 3) = fw;
            return;
        }
        float bf[12];
        if (bg_mode == 0) {
#pragma unroll
            for (int j = 0; j < PX; ++j) { bf[3*j] = c0; bf[3*j+1] = c1; bf[3*j+2] = c2; }
        } else if (bg_mode == 1) {
            const uint3 bw = *(const uint3*)(bg + (size_t)y * bg_pitch + (size_t)xs * 3);
#pragma unroll
            for (int i = 0; i < 12; ++i) bf[i] = (float)byte_of(bw, i);
        } else {
#pragma unroll
            for (int c = 0; c < 3; ++c) {
                bf[c] = vpass_shifted(ga[c].x & 0xffffu, gb[c].x & 0xffffu, yt);
                bf[3 + c] = vpass_shifted(ga[c].x >> 16, gb[c].x >> 16, yt);
                bf[6 + c] = vpass_shifted(ga[c].y & 0xffffu, gb[c].y & 0xffffu, yt);
                bf[9 + c] = vpass_shifted(ga[c].y >> 16, gb[c].y >> 16, yt);
            }
        }
        unsigned int ow[3] = {0u, 0u, 0u};
#pragma unroll
        for (int i = 0; i < 12; ++i) {
            const int j = i / 3;
            const unsigned int v = blend1((float)byte_of(fw, i), bf[i], m[j], 1.0f - m[j]);
            ow[i >> 2] |= v << (8 * (i & 3));
        }
        *(uint3*)(orow + (size_t)xs * 3) = make_uint3(ow[0], ow[1], ow[2]);
        return;
    }
    for (int j = 0; j < PX; ++j) {  // odd widths / pitches: pixel by pixel
        const int x = xs + j;
        if (x >= W) break;
        float a = 0.0f;
#pragma unroll
        for (int k = 0; k < NW; ++k)
            if (k < n) a += wk[k] * __ldg(&h0[(size_t)k * pitch + x]);
        const float mj = clip_snap(a);
        mrow[x] = mj;
        const unsigned char* f = frow + (size_t)x * 3;
        unsigned char* o = orow + (size_t)x * 3;
        if (bg_mode == 3) { o[0] = f[0]; o[1] = f[1]; o[2] = f[2]; continue; }
        float b[3];
        if (bg_mode == 0) {
            b[0] = c0; b[1] = c1; b[2] = c2;
        } else if (bg_mode == 1) {
            const unsigned char* p = bg + (size_t)y * bg_pitch + (size_t)x * 3;
            b[0] = p[0]; b[1] = p[1]; b[2] = p[2];
        } else {
            const int4 yt = __ldg(&bytab[y]);
            for (int c = 0; c < 3; ++c)
                b[c] = vpass_shifted(bgh[((size_t)yt.x * 3 + c) * pitch + x],
                                     bgh[((size_t)yt.y * 3 + c) * pitch + x], yt);
        }
        const float inv = 1.0f - mj;
        for (int c = 0; c < 3; ++c) o[c] = blend1((float)f[c], b[c], mj, inv);
    }
}
