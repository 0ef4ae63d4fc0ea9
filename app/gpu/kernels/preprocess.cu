// Fused preprocessing: bilinear resize of a BGR uint8 frame + colour order + scale/mean/std
// + NCHW or NHWC + float32 or float16 store, straight into the model's input buffer.
//
// The resize reproduces OpenCV's cv::resize(INTER_LINEAR) on uint8 bit for bit: 11-bit
// fixed-point weights (the host computes them exactly as OpenCV does, see preprocess.py),
// a horizontal pass to int (value * 2048), and OpenCV's vectorised vertical pass
// (((h0 >> 4) * b0) >> 16) + (((h1 >> 4) * b1) >> 16) + 2) >> 2.

__device__ __forceinline__ unsigned short f32_to_f16_bits(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// Colour order + scale/mean/std + layout + dtype of one resized pixel v (BGR, 0..255).
__device__ __forceinline__ void store_pixel(
    const int v[3], void* __restrict__ dst, int dx, int dy, int dst_w, int dst_h,
    int swap_rb, int nchw, int fp16,
    float scale, float m0, float m1, float m2, float s0, float s1, float s2)
{
    const float mean[3] = {m0, m1, m2};
    const float stdv[3] = {s0, s1, s2};
    const size_t plane = (size_t)dst_w * dst_h;
    const size_t pix = (size_t)dy * dst_w + dx;
#pragma unroll
    for (int c = 0; c < 3; ++c) {
        const int sc = swap_rb ? 2 - c : c;
        // Three separately rounded operations, as the CPU reference (no FMA contraction).
        const float f = __fdiv_rn(__fsub_rn(__fmul_rn((float)v[sc], scale), mean[c]), stdv[c]);
        const size_t idx = nchw ? (size_t)c * plane + pix : pix * 3 + c;
        if (fp16) {
            ((unsigned short*)dst)[idx] = f32_to_f16_bits(f);
        } else {
            ((float*)dst)[idx] = f;
        }
    }
}

// xtab[dx] = (sx0, sx1, a0, a1), ytab[dy] = (sy0, sy1, b0, b1): source indices (clamped)
// and fixed-point weights.
extern "C" __global__ void preprocess_bilinear_u8(
    const unsigned char* __restrict__ src, int src_pitch,
    const int4* __restrict__ xtab, const int4* __restrict__ ytab,
    void* __restrict__ dst, int dst_w, int dst_h,
    int swap_rb, int nchw, int fp16,
    float scale, float m0, float m1, float m2, float s0, float s1, float s2)
{
    const int dx = blockIdx.x * blockDim.x + threadIdx.x;
    const int dy = blockIdx.y * blockDim.y + threadIdx.y;
    if (dx >= dst_w || dy >= dst_h) return;

    const int4 xt = __ldg(&xtab[dx]);
    const int4 yt = __ldg(&ytab[dy]);
    const unsigned char* r0 = src + (size_t)yt.x * src_pitch;
    const unsigned char* r1 = src + (size_t)yt.y * src_pitch;
    const int p0 = xt.x * 3, p1 = xt.y * 3;

    int v[3];
#pragma unroll
    for (int c = 0; c < 3; ++c) {
        const int h0 = (int)r0[p0 + c] * xt.z + (int)r0[p1 + c] * xt.w;
        const int h1 = (int)r1[p0 + c] * xt.z + (int)r1[p1 + c] * xt.w;
        int q = ((((h0 >> 4) * yt.z) >> 16) + (((h1 >> 4) * yt.w) >> 16) + 2) >> 2;
        v[c] = min(max(q, 0), 255);
    }

    store_pixel(v, dst, dx, dy, dst_w, dst_h, swap_rb, nchw, fp16, scale, m0, m1, m2, s0, s1, s2);
}

// Warp conventions (bilinear_top_left, bilinear_align_corners; segcam/inference/resample.py):
// OpenCV 3.4's warpPerspective INTER_LINEAR arithmetic on uint8. xtab[dx] = (x0, tx),
// ytab[dy] = (y0, ty): first tap and 1/32 sub-pixel index; wtab[ty*32 + tx] = the four 15-bit
// weights of taps (y0,x0), (y0,x0+1), (y0+1,x0), (y0+1,x0+1). A tap outside the frame reads 0.
extern "C" __global__ void preprocess_warp_u8(
    const unsigned char* __restrict__ src, int src_pitch, int src_w, int src_h,
    const int2* __restrict__ xtab, const int2* __restrict__ ytab,
    const int4* __restrict__ wtab,
    void* __restrict__ dst, int dst_w, int dst_h,
    int swap_rb, int nchw, int fp16,
    float scale, float m0, float m1, float m2, float s0, float s1, float s2)
{
    const int dx = blockIdx.x * blockDim.x + threadIdx.x;
    const int dy = blockIdx.y * blockDim.y + threadIdx.y;
    if (dx >= dst_w || dy >= dst_h) return;

    const int2 xt = __ldg(&xtab[dx]);
    const int2 yt = __ldg(&ytab[dy]);
    const int4 wt = __ldg(&wtab[yt.y * 32 + xt.y]);
    const int x1 = xt.x + 1, y1 = yt.x + 1;
    const bool inx0 = xt.x >= 0 && xt.x < src_w, inx1 = x1 >= 0 && x1 < src_w;
    const bool iny0 = yt.x >= 0 && yt.x < src_h, iny1 = y1 >= 0 && y1 < src_h;
    const int w00 = (iny0 && inx0) ? wt.x : 0, w01 = (iny0 && inx1) ? wt.y : 0;
    const int w10 = (iny1 && inx0) ? wt.z : 0, w11 = (iny1 && inx1) ? wt.w : 0;
    // Clamped addresses: a tap outside has weight 0 but must still be a valid read.
    const int cx0 = min(max(xt.x, 0), src_w - 1) * 3, cx1 = min(max(x1, 0), src_w - 1) * 3;
    const unsigned char* r0 = src + (size_t)min(max(yt.x, 0), src_h - 1) * src_pitch;
    const unsigned char* r1 = src + (size_t)min(max(y1, 0), src_h - 1) * src_pitch;

    int v[3];
#pragma unroll
    for (int c = 0; c < 3; ++c) {
        const int acc = (int)r0[cx0 + c] * w00 + (int)r0[cx1 + c] * w01
                      + (int)r1[cx0 + c] * w10 + (int)r1[cx1 + c] * w11 + (1 << 14);
        v[c] = min(max(acc >> 15, 0), 255);
    }
    store_pixel(v, dst, dx, dy, dst_w, dst_h, swap_rb, nchw, fp16, scale, m0, m1, m2, s0, s1, s2);
}
