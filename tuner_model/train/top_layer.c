/* The grid path's top layer for one tile, in one pass per block of pixels (train/native.py builds and
 * loads this; train/grid.py calls it). For a one-hidden-layer TUNER network with C output channels:
 *
 *   s = sin(z), o = C s + b - target (times a 0/1 mask when given), loss += sum o^2,
 *   d = scale * o, d_b += sum d, d_C += d s^T, and z <- dz = cos(z) * (C^T d).
 *
 * z is a tile of t rows of n neurons of w pixels, float32, pixels contiguous: row r, neuron j starts at
 * z + r * row_stride + j * neuron_stride ((t, n, w) order: n * w and w; neuron-major (n, t, w), where a
 * deeper layer's product is one matrix product: w and t * w). target (t, c, w); mask (t, w) or NULL. The
 * eager form runs a
 * sine pass, a cosine pass and small C-row products per row, each over the whole tile in memory; here a
 * block of 16 pixels' n pre-activations stays in L1 between the forward and the backward, and sine and
 * cosine come from one range reduction. Rows are split over threads, each with its own accumulators.
 *
 * sincos: Cody-Waite reduction by pi/2 in three parts, then the Cephes single-precision polynomials on
 * [-pi/4, pi/4] (about 1 ulp there); exact enough to |z| ~ 1e4, far beyond what bounded weights reach.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 16
#define MAX_C 3

static inline void sincos_block(const float *restrict x, float *restrict s, float *restrict c) {
#pragma omp simd
    for (int i = 0; i < BLOCK; i++) {
        float v = x[i];
        float j = rintf(v * 0.63661977236758134f);
        int q = (int)j;
        float r = v - j * 1.5703125f;
        r = r - j * 4.837512969970703125e-4f;
        r = r - j * 7.54978995489188216e-8f;
        float r2 = r * r;
        float sp = r + r * r2 * (-1.6666654611e-1f + r2 * (8.3321608736e-3f + r2 * -1.9515295891e-4f));
        float cp = 1.0f - 0.5f * r2 + r2 * r2 * (4.166664568298827e-2f + r2 * (-1.388731625493765e-3f
                   + r2 * 2.443315711809948e-5f));
        float sv = (q & 1) ? cp : sp;
        float cv = (q & 1) ? sp : cp;
        s[i] = (q & 2) ? -sv : sv;
        c[i] = ((q + 1) & 2) ? -cv : cv;
    }
}

typedef struct {
    float *z;
    const float *cw, *cb, *target, *mask;
    int t0, t1, n, w, c;
    size_t row_stride, neuron_stride;
    float scale;
    double loss;
    double *d_b;  /* (c) */
    double *d_c;  /* (c, n) */
    float *s_buf, *c_buf;  /* (n, BLOCK) each */
    float *cw3;  /* (MAX_C, n): cw, zero rows past c */
} Job;

static void run_rows(Job *job) {
    const int n = job->n, w = job->w, nc = job->c;
    float *restrict sb = job->s_buf, *restrict cbuf = job->c_buf;
    /* Channels padded to MAX_C with zero weights: fixed trip counts the compiler unrolls and vectorizes. */
    float *restrict cw = job->cw3;
    for (int t = job->t0; t < job->t1; t++) {
        float *zt = job->z + (size_t)t * job->row_stride;
        const float *tg = job->target + (size_t)t * nc * w;
        const float *mk = job->mask ? job->mask + (size_t)t * w : NULL;
        for (int x0 = 0; x0 < w; x0 += BLOCK) {
            int len = w - x0 < BLOCK ? w - x0 : BLOCK;
            float o0[BLOCK] = {0}, o1[BLOCK] = {0}, o2[BLOCK] = {0};
            float zin[BLOCK];
            for (int j = 0; j < n; j++) {
                const float *zj = zt + (size_t)j * job->neuron_stride + x0;
                if (len == BLOCK) memcpy(zin, zj, sizeof zin);
                else for (int i = 0; i < BLOCK; i++) zin[i] = i < len ? zj[i] : 0.0f;
                float *restrict sj = sb + (size_t)j * BLOCK, *restrict cj = cbuf + (size_t)j * BLOCK;
                sincos_block(zin, sj, cj);
                const float a0 = cw[j], a1 = cw[n + j], a2 = cw[2 * n + j];
#pragma omp simd
                for (int i = 0; i < BLOCK; i++) {
                    o0[i] += a0 * sj[i];
                    o1[i] += a1 * sj[i];
                    o2[i] += a2 * sj[i];
                }
            }
            float d[MAX_C][BLOCK];
            float *os[MAX_C] = {o0, o1, o2};
            for (int ch = 0; ch < MAX_C; ch++) {
                if (ch >= nc) {
                    for (int i = 0; i < BLOCK; i++) d[ch][i] = 0.0f;
                    continue;
                }
                double acc = 0.0, dsum = 0.0;
                for (int i = 0; i < BLOCK; i++) {
                    float e = 0.0f;
                    if (i < len) {
                        e = os[ch][i] + job->cb[ch] - tg[ch * w + x0 + i];
                        if (mk) e *= mk[x0 + i];
                    }
                    acc += (double)e * e;
                    d[ch][i] = e * job->scale;
                    dsum += d[ch][i];
                }
                job->loss += acc;
                job->d_b[ch] += dsum;
            }
            for (int j = 0; j < n; j++) {
                const float *restrict sj = sb + (size_t)j * BLOCK, *restrict cj = cbuf + (size_t)j * BLOCK;
                const float a0 = cw[j], a1 = cw[n + j], a2 = cw[2 * n + j];
                float g[BLOCK];
                float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2)
                for (int i = 0; i < BLOCK; i++) {
                    g[i] = cj[i] * (a0 * d[0][i] + a1 * d[1][i] + a2 * d[2][i]);
                    s0 += d[0][i] * sj[i];
                    s1 += d[1][i] * sj[i];
                    s2 += d[2][i] * sj[i];
                }
                job->d_c[j] += s0;
                if (nc > 1) job->d_c[n + j] += s1;
                if (nc > 2) job->d_c[2 * n + j] += s2;
                float *zj = zt + (size_t)j * job->neuron_stride + x0;
                if (len == BLOCK) memcpy(zj, g, sizeof g);
                else for (int i = 0; i < len; i++) zj[i] = g[i];
            }
        }
    }
}

static void *thread_main(void *arg) {
    run_rows((Job *)arg);
    return NULL;
}

/* Returns 0, or -1 when c is out of range or memory runs out (the caller then takes the eager path). */
int tuner_top_layer(float *z, const float *cw, const float *cb, const float *target, const float *mask,
                    int t, int n, int w, int c, long row_stride, long neuron_stride, float scale, int threads,
                    double *loss, double *d_b, double *d_c) {
    if (c < 1 || c > MAX_C || t < 1 || n < 1 || w < 1 || row_stride < w || neuron_stride < w) return -1;
    if (threads < 1) threads = 1;
    if (threads > t) threads = t;
    if (threads > 64) threads = 64;
    Job jobs[64];
    pthread_t ids[64];
    int ok = 0;
    for (int k = 0; k < threads; k++) {
        Job *jb = &jobs[k];
        jb->z = z; jb->cw = cw; jb->cb = cb; jb->target = target; jb->mask = mask;
        jb->t0 = (int)((long)t * k / threads);
        jb->t1 = (int)((long)t * (k + 1) / threads);
        jb->cw3 = NULL;
        jb->n = n; jb->w = w; jb->c = c; jb->scale = scale; jb->loss = 0.0;
        jb->row_stride = (size_t)row_stride; jb->neuron_stride = (size_t)neuron_stride;
        jb->d_b = calloc((size_t)c, sizeof(double));
        jb->d_c = calloc((size_t)c * n, sizeof(double));
        jb->s_buf = malloc((size_t)n * BLOCK * sizeof(float));
        jb->c_buf = malloc((size_t)n * BLOCK * sizeof(float));
        jb->cw3 = calloc((size_t)MAX_C * n, sizeof(float));
        if (!jb->d_b || !jb->d_c || !jb->s_buf || !jb->c_buf || !jb->cw3) {
            threads = k + 1;
            ok = -1;
            break;
        }
        memcpy(jb->cw3, cw, (size_t)c * n * sizeof(float));
    }
    int started = 0;
    if (ok == 0) {
        for (int k = 1; k < threads; k++) {
            if (pthread_create(&ids[k], NULL, thread_main, &jobs[k]) != 0) break;
            started = k;
        }
        /* rows of threads that could not start run here */
        run_rows(&jobs[0]);
        for (int k = started + 1; k < threads; k++) run_rows(&jobs[k]);
        for (int k = 1; k <= started; k++) pthread_join(ids[k], NULL);
        for (int k = 0; k < threads; k++) {
            *loss += jobs[k].loss;
            for (int ch = 0; ch < c; ch++) d_b[ch] += jobs[k].d_b[ch];
            for (int i = 0; i < c * n; i++) d_c[i] += jobs[k].d_c[i];
        }
    }
    for (int k = 0; k < threads; k++) {
        free(jobs[k].d_b); free(jobs[k].d_c); free(jobs[k].s_buf); free(jobs[k].c_buf); free(jobs[k].cw3);
    }
    return ok;
}
