// rnnsweep's own CUDA kernels: the gate passes of the GPU recurrent layer (one launch per step
// and direction, beside one cuBLAS multiply), the row gathers that order a batch longest first,
// and the embedding gradient grouped by id.
//
// Compiled to PTX by build.rs with the pinned toolkit (scripts/cuda-env.sh), so a driver that
// speaks that CUDA version loads it. The gate math is the CPU kernel's (src/nn/lstm/gates.rs),
// written out once more for the device: a change to one must be made to the other, and the
// whole-network device oracle (tests/model/net_device.rs) compares them.
//
// Every kernel walks its elements with a grid-stride loop, so any launch size is correct.

#define GRID_STRIDE(i, total)                                                                    \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (total);           \
         i += (long long)blockDim.x * gridDim.x)

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// dst[t, i, :] = src[t, index[i], :] (+ bias). Orders rows for the recurrent op and back, and
// looks embedding rows up (steps = 1).
extern "C" __global__ void rnnsweep_gather_rows(float *dst, const float *src,
                                                const unsigned int *index, const float *bias,
                                                int use_bias, int steps, int batch, int width) {
    long long total = (long long)steps * batch * width;
    GRID_STRIDE(k, total) {
        long long w = k % width;
        long long row = k / width;
        long long t = row / batch;
        long long i = row % batch;
        float v = src[(t * batch + index[i]) * width + w];
        dst[k] = use_bias ? v + bias[w] : v;
    }
}

// dst[r, :width] = src[r, offset : offset + width]: one direction's half of [B, 2U].
extern "C" __global__ void rnnsweep_copy_columns(float *dst, const float *src, int rows,
                                                 int width, int src_stride, int offset) {
    long long total = (long long)rows * width;
    GRID_STRIDE(k, total) {
        long long r = k / width;
        long long w = k % width;
        dst[k] = src[r * src_stride + offset + w];
    }
}

// One LSTM step of one direction over rows 0..n. `gates[t]` holds x·W + b + h·R on entry and
// the activations i, f, g, o on exit. The state before the step goes to the trace for every
// row; a padded row keeps its state and its output stays zero.
extern "C" __global__ void rnnsweep_lstm_forward_step(
    float *gates, float *c, float *h, float *trace_h, float *c_prev, float *tanh_c, float *out,
    long long out_step, int out_stride, int out_offset, const unsigned char *mask, int t, int n,
    int batch, int units) {
    long long total = (long long)n * units;
    GRID_STRIDE(k, total) {
        long long row = k / units;
        long long u = k % units;
        long long state = row * units + u;
        long long traced = (long long)t * batch * units + state;
        float h_old = h[state];
        trace_h[traced] = h_old;
        if (!mask[(long long)t * batch + row]) continue;
        float *z = gates + ((long long)t * batch + row) * 4 * units;
        float i = sigmoid(z[u]);
        float f = sigmoid(z[units + u]);
        float g = tanhf(z[2 * units + u]);
        float o = sigmoid(z[3 * units + u]);
        float old = c[state];
        float new_c = f * old + i * g;
        float tc = tanhf(new_c);
        float new_h = o * tc;
        z[u] = i;
        z[units + u] = f;
        z[2 * units + u] = g;
        z[3 * units + u] = o;
        c_prev[traced] = old;
        c[state] = new_c;
        tanh_c[traced] = tc;
        h[state] = new_h;
        out[(long long)t * out_step + row * out_stride + out_offset + u] = new_h;
    }
}

// One LSTM backward step over rows 0..n. On a real row: dz of the step, the cell gradient
// before it, and dh zeroed (the caller then adds dz·Rᵀ to dh with one multiply, so a padded
// row, whose dz stays zero, passes its dh through untouched).
extern "C" __global__ void rnnsweep_lstm_backward_step(
    const float *gates, const float *c_prev, const float *tanh_c, float *dh, float *dc,
    const float *d_out, int has_d_out, long long d_out_step, int d_out_stride, int d_out_offset,
    float *dz, const unsigned char *mask, int t, int n, int batch, int units) {
    long long total = (long long)n * units;
    GRID_STRIDE(k, total) {
        long long row = k / units;
        long long u = k % units;
        if (!mask[(long long)t * batch + row]) continue;
        long long state = row * units + u;
        long long traced = (long long)t * batch * units + state;
        long long gate_row = ((long long)t * batch + row) * 4 * units;
        const float *a = gates + gate_row;
        float i = a[u], f = a[units + u], g = a[2 * units + u], o = a[3 * units + u];
        float cp = c_prev[traced], tc = tanh_c[traced];
        float dh_new = dh[state];
        if (has_d_out) dh_new += d_out[(long long)t * d_out_step + row * d_out_stride + d_out_offset + u];
        float dc_new = dc[state] + dh_new * o * (1.0f - tc * tc);
        float *d = dz + gate_row;
        d[u] = dc_new * g * i * (1.0f - i);
        d[units + u] = dc_new * cp * f * (1.0f - f);
        d[2 * units + u] = dc_new * i * (1.0f - g * g);
        d[3 * units + u] = dh_new * tc * o * (1.0f - o);
        dc[state] = dc_new * f;
        dh[state] = 0.0f;
    }
}

// One GRU step (Keras reset_after=True) of one direction over rows 0..n. `gates[t]` holds the
// input projection with its bias; `hr` this step's h·R without the recurrent bias.
extern "C" __global__ void rnnsweep_gru_forward_step(
    float *gates, const float *hr, const float *recurrent_bias, float *h, float *trace_h,
    float *candidate_recurrent, float *out, long long out_step, int out_stride, int out_offset,
    const unsigned char *mask, int t, int n, int batch, int units) {
    long long total = (long long)n * units;
    GRID_STRIDE(k, total) {
        long long row = k / units;
        long long u = k % units;
        long long state = row * units + u;
        long long traced = (long long)t * batch * units + state;
        float h_old = h[state];
        trace_h[traced] = h_old;
        if (!mask[(long long)t * batch + row]) continue;
        float *z = gates + ((long long)t * batch + row) * 3 * units;
        const float *r = hr + row * 3 * units;
        float update = sigmoid(z[u] + r[u] + recurrent_bias[u]);
        float reset = sigmoid(z[units + u] + r[units + u] + recurrent_bias[units + u]);
        float hc = r[2 * units + u] + recurrent_bias[2 * units + u];
        float candidate = tanhf(z[2 * units + u] + reset * hc);
        float new_h = candidate + update * (h_old - candidate);
        z[u] = update;
        z[units + u] = reset;
        z[2 * units + u] = candidate;
        candidate_recurrent[traced] = hc;
        h[state] = new_h;
        out[(long long)t * out_step + row * out_stride + out_offset + u] = new_h;
    }
}

// One GRU backward step over rows 0..n: the gradients of the input projection and of h·R + b'
// (they differ in the candidate block), and dh ⊙ z left in dh on real rows (the caller adds
// dz_recurrent·Rᵀ).
extern "C" __global__ void rnnsweep_gru_backward_step(
    const float *gates, const float *trace_h, const float *candidate_recurrent, float *dh,
    const float *d_out, int has_d_out, long long d_out_step, int d_out_stride, int d_out_offset,
    float *dz_input, float *dz_recurrent, const unsigned char *mask, int t, int n, int batch,
    int units) {
    long long total = (long long)n * units;
    GRID_STRIDE(k, total) {
        long long row = k / units;
        long long u = k % units;
        if (!mask[(long long)t * batch + row]) continue;
        long long state = row * units + u;
        long long traced = (long long)t * batch * units + state;
        long long gate_row = ((long long)t * batch + row) * 3 * units;
        const float *a = gates + gate_row;
        float update = a[u], reset = a[units + u], candidate = a[2 * units + u];
        float hp = trace_h[traced], hc = candidate_recurrent[traced];
        float dh_new = dh[state];
        if (has_d_out) dh_new += d_out[(long long)t * d_out_step + row * d_out_stride + d_out_offset + u];
        float d_candidate = dh_new * (1.0f - update);
        float du = dh_new * (hp - candidate) * update * (1.0f - update);
        float dcx = d_candidate * (1.0f - candidate * candidate);
        float dch = dcx * reset;
        float drx = dcx * hc * reset * (1.0f - reset);
        float *dx = dz_input + gate_row;
        float *dr = dz_recurrent + gate_row;
        dx[u] = du;
        dx[units + u] = drx;
        dx[2 * units + u] = dcx;
        dr[u] = du;
        dr[units + u] = drx;
        dr[2 * units + u] = dch;
        dh[state] = dh_new * update;
    }
}

// The embedding table's gradient, one thread per (distinct id, column): the sum of the output
// gradient's rows at that id's positions, in position order (deterministic, and parallel over
// ids where an atomic or serial index_add would queue on frequent ones). Rows of ids absent
// from the batch are left as they are (zero).
extern "C" __global__ void rnnsweep_embedding_backward(float *d_table, const float *d_out,
                                                       const unsigned int *ids,
                                                       const unsigned int *starts,
                                                       const unsigned int *positions,
                                                       int distinct, int width) {
    long long total = (long long)distinct * width;
    GRID_STRIDE(k, total) {
        long long j = k / width;
        long long w = k % width;
        float sum = 0.0f;
        for (unsigned int p = starts[j]; p < starts[j + 1]; ++p) {
            sum += d_out[(long long)positions[p] * width + w];
        }
        d_table[(long long)ids[j] * width + w] = sum;
    }
}
