/* Hot steps of the cell cleanup (digitscan.worker.imaging), compiled: the clear ink and
   its printed rules (ink_mask: the rule search rules_of, with its runs, a box's corners and
   its test of what the box encloses, and the ink's level), the contrast stretch (_stretch),
   the digit's components (keep_digit: their labelling, a comb's ticks among them and the
   choice), the ink of a colour cell (ink_of), the rule removal (remove_rules) and the
   digit's crop and paste into its field (normalize's end, around OpenCV's resampling:
   _fit).

   Each gives the same results as the numpy/OpenCV version beside it in imaging (ink_mask's,
   rules_of's and keep_digit's own, _runs_numpy, _meet_twice_numpy, _encloses,
   _level_numpy, _comb_ticks, _keep_numpy, _stretch_numpy, _remove_rules_numpy, ink_of's
   OpenCV path, _fit_numpy), which tests/test_imaging.py holds it to, step by step and
   whole. Those are chains of small OpenCV and numpy calls: a rule search is a dozen OpenCV
   and fifteen numpy calls on a few rows each, ~100-150 us a call on a boxed cell (2 cores,
   Ice Lake), where the work itself is a few thousand byte operations. Optional (setup.py):
   where it is not built (no C compiler at install) those versions run.

   Masks are 0 and 255, as imaging makes them (the windows AND and OR their bytes, as the
   references' own arithmetic assumes them too); OpenCV's morphology is reproduced as it runs
   there: a rectangle kernel anchored at its centre (length // 2), pixels past the edge
   ignored (erosion sees ink there, dilation none). Build with -ffp-contract=off: the rule's
   centre line is numpy's interpolation, slope * (x - x0) + y0 in two roundings. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Memory kept between calls: the functions here run with the GIL held and never call back
   into Python, so one scratch buffer serves them all. A fresh malloc of ~100 KB a call went
   back to the system on free and came back page by page (faults) on the next. A second
   one holds what a step keeps while it calls others that use the scratch: the rule
   search's runs while their corners are counted (find_rules). */
typedef struct {
    unsigned char *buf;
    size_t size;
} Kept;

static Kept scratch, held;

static void *grow(Kept *kept, size_t size)
{
    if (size > kept->size) {
        void *grown = realloc(kept->buf, size);
        if (!grown) return NULL;
        kept->buf = grown;
        kept->size = size;
    }
    return kept->buf;
}

static void *scratch_get(size_t size) { return grow(&scratch, size); }

static void *held_get(size_t size) { return grow(&held, size); }

/* Windows of 1, 2, 4, ... cells of `cell` bytes over the len bytes of buf, OR (dilation)
   or AND (erosion), doubling while the window fits in t; every step one loop over bytes
   that the compiler vectorises. Returns the buffer that holds them (buf or tmp) and their
   width in *span: a window of t cells at i is then cell i's op cell i + t - span. */
static unsigned char *double_windows(unsigned char *buf, unsigned char *tmp, size_t len,
                                     size_t cell, int t, int is_and, size_t *span)
{
    for (*span = 1; *span * 2 <= (size_t)t; *span *= 2) {
        size_t off = *span * cell, m = len - off;
        if (is_and)
            for (size_t i = 0; i < m; i++) tmp[i] = buf[i] & buf[i + off];
        else
            for (size_t i = 0; i < m; i++) tmp[i] = buf[i] | buf[i + off];
        unsigned char *swap = buf;
        buf = tmp;
        tmp = swap;
        len = m;
    }
    return buf;
}

/* Over the h rows of w bytes of src, row y of dst = the OR (dilation) or AND (erosion) of
   the t rows centred on it (t odd), rows past the ends counting as 0 for OR and 255 for
   AND: OpenCV's rectangle kernels with their default border. buf and tmp: scratch of
   (h + t) * w bytes each. */
static void across_rows(const unsigned char *src, unsigned char *dst, int h, int w, int t,
                        int is_and, unsigned char *buf, unsigned char *tmp)
{
    size_t a = t / 2, row = w;
    unsigned char pad = is_and ? 255 : 0;
    memset(buf, pad, a * row);
    memcpy(buf + a * row, src, (size_t)h * row);
    memset(buf + (a + h) * row, pad, a * row);
    size_t span;
    buf = double_windows(buf, tmp, (h + 2 * a) * row, row, t, is_and, &span);
    size_t m = (size_t)h * row, off = (t - span) * row;
    if (is_and)
        for (size_t i = 0; i < m; i++) dst[i] = buf[i] & buf[i + off];
    else
        for (size_t i = 0; i < m; i++) dst[i] = buf[i] | buf[i + off];
}

/* The same along every row at once, for any t: the window of t pixels at x starts at
   x - t / 2 (OpenCV's anchor; for an even t one pixel more lies left of x than right). The
   rows padded side by side make one line, whose windows never reach past their own row's
   padding. buf and tmp: h * (w + t) bytes each. */
static void along_rows(const unsigned char *src, unsigned char *dst, int h, int w, int t,
                       int is_and, unsigned char *buf, unsigned char *tmp)
{
    size_t a = t / 2, pw = (size_t)w + 2 * a;
    unsigned char pad = is_and ? 255 : 0;
    for (int y = 0; y < h; y++) {
        unsigned char *r = buf + (size_t)y * pw;
        memset(r, pad, a);
        memcpy(r + a, src + (size_t)y * w, w);
        memset(r + a + w, pad, a);
    }
    size_t span;
    buf = double_windows(buf, tmp, (size_t)h * pw, 1, t, is_and, &span);
    size_t off = t - span;
    for (int y = 0; y < h; y++) {
        const unsigned char *r = buf + (size_t)y * pw;
        unsigned char *d = dst + (size_t)y * w;
        if (is_and)
            for (int x = 0; x < w; x++) d[x] = r[x] & r[x + off];
        else
            for (int x = 0; x < w; x++) d[x] = r[x] | r[x + off];
    }
}

/* imaging._own_band on the rows x cols found pixels f, whose first row is the band's row
   `top`: in a column thicker than the rule, only the rows within its thickness of its
   centre line stay. counts, inked: scratch of cols ints; xp, fp: of cols doubles. */
static void own_band(unsigned char *f, int rows, int cols, int top, int *counts, int *inked,
                     double *xp, double *fp)
{
    int n = 0, hist[257] = {0};
    for (int c = 0; c < cols; c++) counts[c] = 0;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            counts[c] += f[r * cols + c] != 0;
    for (int c = 0; c < cols; c++)
        if (counts[c]) {
            inked[n++] = counts[c];
            hist[counts[c] > 256 ? 256 : counts[c]]++;
        }
    if (n < 8) return;
    /* The quarter-th smallest count (np.partition), from the counts' histogram. */
    int quarter = n / 4, seen = 0, thickness = 0;
    for (int v = 0; v <= 256; v++) {
        seen += hist[v];
        if (seen > quarter) { thickness = v; break; }
    }
    if (thickness == 256) { /* a column over 256 rows: order them all */
        for (int i = 0; i <= quarter; i++)
            for (int j = i + 1; j < n; j++)
                if (inked[j] < inked[i]) { int t = inked[i]; inked[i] = inked[j]; inked[j] = t; }
        thickness = inked[quarter];
    }
    int n_wide = 0;
    for (int i = 0; i < n; i++) n_wide += inked[i] > thickness + 1;
    if (!n_wide || n - n_wide < quarter) return;
    /* The centre line of the clean columns (mean row of their ink)... */
    int m = 0;
    for (int c = 0; c < cols; c++) {
        if (!counts[c] || counts[c] > thickness + 1) continue;
        long sum = 0;
        for (int r = 0; r < rows; r++)
            if (f[r * cols + c]) sum += top + r;
        xp[m] = c;
        fp[m++] = (double)(sum * 255) / (255.0 * counts[c]);
    }
    /* ...interpolated into the wide ones, as np.interp does it. */
    double limit = thickness / 2.0 + 0.5;
    int j = 0;
    for (int c = 0; c < cols; c++) {
        if (counts[c] <= thickness + 1) continue;
        double x = c, line;
        while (j < m && xp[j] <= x) j++; /* xp[j - 1] <= x < xp[j] */
        if (j == 0) line = fp[0];
        else if (j == m) line = fp[m - 1];
        else {
            double slope = (fp[j] - fp[j - 1]) / (xp[j] - xp[j - 1]);
            line = slope * (x - xp[j - 1]) + fp[j - 1];
        }
        for (int r = 0; r < rows; r++)
            if (fabs((double)(top + r) - line) > limit) f[r * cols + c] = 0;
    }
}

static int count_ink(const unsigned char *s, int n)
{
    int c = 0;
    for (int x = 0; x < n; x++) c += s[x] != 0;
    return c;
}

/* cv2.boundingRect of the h x w image's nonzero pixels: 1 and the box's first and last
   column and row (inclusive) in *x0, *x1, *y0, *y1; 0 where there are none (then 0, -1, 0,
   -1: OpenCV's (0, 0, 0, 0)). */
static int bounding_box(const unsigned char *img, int h, int w, int *x0, int *x1, int *y0,
                        int *y1)
{
    *x0 = *y0 = 0;
    *x1 = *y1 = -1;
    for (int y = 0; y < h; y++) {
        const unsigned char *row = img + (size_t)y * w;
        if (!count_ink(row, w)) continue;
        int first = 0, last = w - 1;
        while (!row[first]) first++;
        while (!row[last]) last--;
        if (*y1 < 0) {
            *y0 = y;
            *x0 = first;
            *x1 = last;
        }
        *y1 = y;
        if (first < *x0) *x0 = first;
        if (last > *x1) *x1 = last;
    }
    return *y1 >= 0;
}

static void or_into(unsigned char *restrict d, const unsigned char *restrict s, int n)
{
    for (int x = 0; x < n; x++) d[x] |= s[x];
}

/* imaging._runs_numpy on the h x w mask, its pixels written into `out` (h x w): 1 where it found
   some, 0 where none, -1 out of memory. */
static int find_runs(const unsigned char *mask, unsigned char *out, int h, int w,
                     int horizontal, double fraction, int spanning)
{
    int H = horizontal ? h : w, W = horizontal ? w : h; /* across, along the runs */
    int length = (int)(fraction * W);
    memset(out, 0, (size_t)h * w);
    if (length < 8) return 0;
    int band = H / 3, k = H / 40 * 2 + 1;
    if (k < 3) k = 3;
    int reach = band + k / 2 < H ? band + k / 2 : H;
    int starts[2] = {0, H - reach}, keep_lo[2] = {0, reach - band}, keep_hi[2] = {band, reach};
    /* A run needs ink in that many columns of its part (half the length: the erosion sees
       ink past the cell's edge), and so does each row of the thickened part that holds one. */
    int need = (length + 1) / 2;

    size_t part = (size_t)reach * W;
    /* The windows' scratch: the part padded by k rows (across_rows), more than one row
       padded by its length (along_rows over one row). */
    size_t window = (size_t)(reach + k) * W;
    unsigned char *scratch = scratch_get(4 * part + 2 * (size_t)W + 2 * window
                                         + 2 * (size_t)W * sizeof(int)
                                         + 2 * (size_t)W * sizeof(double));
    if (!scratch) return -1;
    double *xp = (double *)scratch, *fp = xp + W;
    int *counts = (int *)(fp + W), *inked = counts + W;
    unsigned char *turned = (unsigned char *)(inked + W), *dil = turned + part;
    unsigned char *core = dil + part, *found = core + part, *line = found + part;
    unsigned char *eroded = line + W, *wb = eroded + W, *wt = wb + window;
    int any_ink = 0;
    for (int p = 0; p < 2; p++) {
        /* The part can hold a run only if its projection has one (imaging._runs_numpy says why):
           for upright runs, each row's OR over the part's columns, read in place. */
        const unsigned char *b = mask + (size_t)starts[p] * W;
        if (horizontal) {
            memcpy(line, b, W);
            for (int r = 1; r < reach; r++) or_into(line, b + (size_t)r * W, W);
        } else {
            for (int y = 0; y < h; y++) {
                const unsigned char *m = mask + (size_t)y * w + starts[p];
                unsigned char v = 0;
                for (int r = 0; r < reach; r++) v |= m[r];
                line[y] = v;
            }
        }
        if (count_ink(line, W) < need) continue;
        along_rows(line, eroded, 1, W, length, 1, wb, wt);
        if (!count_ink(eroded, W)) continue;
        if (!horizontal) { /* upright runs are the rows of the part's columns, transposed */
            for (int y = 0; y < h; y++) {
                const unsigned char *m = mask + (size_t)y * w + starts[p];
                for (int r = 0; r < reach; r++) turned[(size_t)r * W + y] = m[r];
            }
            b = turned;
        }
        /* Thicken across the line (a dilation by k rows), then erode along it. */
        across_rows(b, dil, reach, W, k, 0, wb, wt);
        int top = -1, bottom = -1;
        for (int r = 0; r < reach; r++) {
            unsigned char *d = dil + (size_t)r * W, *c = core + (size_t)r * W;
            if (count_ink(d, W) < need) {
                memset(c, 0, W);
                continue;
            }
            along_rows(d, c, 1, W, length, 1, wb, wt);
            if (count_ink(c, W)) {
                if (top < 0) top = r;
                bottom = r;
            }
        }
        if (top < 0) continue;
        int tall = bottom - top + 1, left = W, right = -1;
        for (int r = 0; r < tall; r++) {
            unsigned char *f = found + (size_t)r * W;
            const unsigned char *s = b + (size_t)(top + r) * W;
            along_rows(core + (size_t)(top + r) * W, f, 1, W, length, 0, wb, wt);
            for (int x = 0; x < W; x++) f[x] = f[x] && s[x] ? 255 : 0;
            for (int x = 0; x < W; x++)
                if (f[x]) {
                    if (x < left) left = x;
                    if (x > right) right = x;
                }
        }
        if (spanning && (right < 0 ? 0 : right - left + 1) < length) continue;
        int lo = keep_lo[p] > top ? keep_lo[p] : top;
        int hi = keep_hi[p] < top + tall ? keep_hi[p] : top + tall;
        if (lo >= hi) continue;
        own_band(found, tall, W, top, counts, inked, xp, fp);
        for (int r = lo; r < hi; r++) {
            const unsigned char *s = found + (size_t)(r - top) * W;
            any_ink |= count_ink(s, W) != 0;
            if (horizontal) {
                memcpy(out + (size_t)(starts[p] + r) * w, s, W);
            } else {
                for (int y = 0; y < h; y++) out[(size_t)y * w + starts[p] + r] = s[y];
            }
        }
    }
    return any_ink;
}

/* runs(mask, out, height, width, horizontal, fraction, spanning) -> bool: find_runs, for
   the tests (ink_mask and rules call it within): False where it finds none. */
static PyObject *runs(PyObject *self, PyObject *args)
{
    Py_buffer mb, ob;
    int h, w, horizontal, spanning;
    double fraction;
    if (!PyArg_ParseTuple(args, "y*w*iipdp", &mb, &ob, &h, &w, &horizontal, &fraction, &spanning))
        return NULL;
    PyObject *result = NULL;
    if (h <= 0 || w <= 0 || mb.len != (Py_ssize_t)h * w || ob.len != mb.len) {
        PyErr_SetString(PyExc_ValueError, "runs: mask and out must both be height x width bytes");
        goto done;
    }
    int found = find_runs(mb.buf, ob.buf, h, w, horizontal, fraction, spanning);
    if (found < 0) { PyErr_NoMemory(); goto done; }
    result = found ? Py_True : Py_False;
    Py_INCREF(result);
done:
    PyBuffer_Release(&mb);
    PyBuffer_Release(&ob);
    return result;
}

/* ink(rgb, gray, out, height, width): imaging.ink_of's colour path, 255 minus the mean of each
   pixel's brightness (`gray`, OpenCV's: its fixed-point weights are OpenCV's to choose) and
   its brightest channel, the mean rounded half to even as OpenCV's addWeighted rounds it.
   One pass where OpenCV took four calls and a split into planes (~56 us a 120 px cell). */
/* The compiler vectorises the three-channel loads with AVX2's byte shuffles, not with
   x86-64's baseline SSE2: with glibc, GCC builds both and the loader picks one by the CPU
   (the same integer arithmetic either way). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
__attribute__((target_clones("avx2", "default")))
#endif
static void ink_rgb(const unsigned char *restrict rgb, const unsigned char *restrict gray,
                    unsigned char *restrict out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char r = rgb[3 * i], g = rgb[3 * i + 1], b = rgb[3 * i + 2], y = gray[i];
        unsigned char m = r > g ? r : g;
        m = m > b ? m : b;
        unsigned int sum = (unsigned int)m + y, half = sum >> 1;
        half += sum & half & 1; /* x.5 to the even neighbour */
        out[i] = (unsigned char)(255 - half);
    }
}

static PyObject *ink(PyObject *self, PyObject *args)
{
    Py_buffer cb, gb, ob;
    int h, w;
    if (!PyArg_ParseTuple(args, "y*y*w*ii", &cb, &gb, &ob, &h, &w)) return NULL;
    PyObject *result = NULL;
    size_t n = (size_t)h * w;
    if (h <= 0 || w <= 0 || gb.len != (Py_ssize_t)n || ob.len != (Py_ssize_t)n
        || cb.len != (Py_ssize_t)(3 * n)) {
        PyErr_SetString(PyExc_ValueError, "ink: rgb must be height x width x 3 bytes, gray and "
                                          "out height x width");
        goto done;
    }
    ink_rgb(cb.buf, gb.buf, ob.buf, n);
    result = Py_None;
done:
    PyBuffer_Release(&cb);
    PyBuffer_Release(&gb);
    PyBuffer_Release(&ob);
    Py_XINCREF(result);
    return result;
}

/* A t x t closing (dilation, then erosion) of the h x w image `img`, into `out`. */
static void close_square(const unsigned char *img, unsigned char *out, int h, int w, int t,
                         unsigned char *a, unsigned char *buf, unsigned char *tmp)
{
    along_rows(img, a, h, w, t, 0, buf, tmp);
    across_rows(a, out, h, w, t, 0, buf, tmp);
    along_rows(out, a, h, w, t, 1, buf, tmp);
    across_rows(a, out, h, w, t, 1, buf, tmp);
}

/* Clears the 8-connected piece of the h x w image `img` that holds pixel `start` (nonzero),
   eight neighbours at a time; returns its pixels. stack: scratch of h * w ints. */
static int clear_piece(unsigned char *img, int h, int w, size_t start, int *stack)
{
    int top = 0, area = 0;
    stack[top++] = (int)start;
    img[start] = 0;
    while (top) {
        int i = stack[--top], y = i / w, x = i % w;
        area++;
        for (int dy = -1; dy <= 1; dy++)
            for (int dx = -1; dx <= 1; dx++) {
                int yy = y + dy, xx = x + dx;
                if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                int j = yy * w + xx;
                if (img[j]) {
                    img[j] = 0;
                    stack[top++] = j;
                }
            }
    }
    return area;
}

/* Whether the horizontal and the upright runs hr and vr (imaging.rules_of), each widened
   by a 5 x 5 square, meet in two places or more: two 8-connected pieces of their overlap,
   as cv2.connectedComponents counts them (1 or 0; -1 out of memory).

   Only the rows within two of a row with horizontal runs can meet (a widened run reaches
   two rows): a box's top and bottom rules, a dozen rows of a hundred. On those rows alone,
   each side widened is the OR of its five rows around (across) widened along the row:
   the 5 x 5 square, as OpenCV's dilation computes it, without the rows that stay empty. */
static int meet_twice(const unsigned char *hr, const unsigned char *vr, int h, int w)
{
    size_t n = (size_t)h * w, big = (size_t)w + 5;
    unsigned char *scratch = scratch_get(n + 4 * (size_t)w + 2 * big + (size_t)h
                                         + n * sizeof(int));
    if (!scratch) return -1;
    int *stack = (int *)scratch;
    unsigned char *meet = scratch + n * sizeof(int), *hs = meet + n, *vs = hs + w;
    unsigned char *hw = vs + w, *vw = hw + w, *buf = vw + w, *tmp = buf + big;
    unsigned char *near = tmp + big;
    /* near[y]: a row within two of one with horizontal runs. */
    memset(near, 0, h);
    for (int y = 0; y < h; y++) {
        if (!count_ink(hr + (size_t)y * w, w)) continue;
        for (int r = y - 2; r <= y + 2; r++)
            if (r >= 0 && r < h) near[r] = 1;
    }
    memset(meet, 0, n);
    for (int y = 0; y < h; y++) {
        if (!near[y]) continue;
        int r0 = y - 2 < 0 ? 0 : y - 2, r1 = y + 2 < h ? y + 2 : h - 1;
        memset(hs, 0, w);
        memset(vs, 0, w);
        for (int r = r0; r <= r1; r++) {
            or_into(hs, hr + (size_t)r * w, w);
            or_into(vs, vr + (size_t)r * w, w);
        }
        if (!count_ink(vs, w)) continue;
        along_rows(hs, hw, 1, w, 5, 0, buf, tmp);
        along_rows(vs, vw, 1, w, 5, 0, buf, tmp);
        unsigned char *m = meet + (size_t)y * w;
        for (int x = 0; x < w; x++) m[x] = hw[x] && vw[x];
    }
    int pieces = 0;
    for (int y = 0; y < h && pieces < 2; y++) {
        if (!near[y]) continue;
        for (size_t start = (size_t)y * w; start < (size_t)(y + 1) * w && pieces < 2; start++) {
            if (!meet[start]) continue;
            pieces++;
            clear_piece(meet, h, w, start, stack);
        }
    }
    return pieces >= 2;
}

/* corners(h_runs, v_runs, height, width) -> bool: meet_twice, for the tests. */
static PyObject *corners(PyObject *self, PyObject *args)
{
    Py_buffer hb, vb;
    int h, w;
    if (!PyArg_ParseTuple(args, "y*y*ii", &hb, &vb, &h, &w)) return NULL;
    PyObject *result = NULL;
    if (h <= 0 || w <= 0 || hb.len != (Py_ssize_t)h * w || vb.len != hb.len) {
        PyErr_SetString(PyExc_ValueError, "corners: the runs must be height x width bytes");
        goto done;
    }
    int meet = meet_twice(hb.buf, vb.buf, h, w);
    if (meet < 0) { PyErr_NoMemory(); goto done; }
    result = meet ? Py_True : Py_False;
    Py_INCREF(result);
done:
    PyBuffer_Release(&hb);
    PyBuffer_Release(&vb);
    return result;
}

/* unrule(mask, rules, out, height, width): imaging.remove_rules_numpy for a cell with rules,
   into out: the mask without its rules, but with the rules' pixels that a closing of what is
   left bridges (strokes crossing a rule). */
static PyObject *unrule(PyObject *self, PyObject *args)
{
    Py_buffer mb, rb, ob;
    int h, w;
    if (!PyArg_ParseTuple(args, "y*y*w*ii", &mb, &rb, &ob, &h, &w)) return NULL;
    PyObject *result = NULL;
    unsigned char *scratch = NULL;
    size_t n = (size_t)h * w;
    if (h <= 0 || w <= 0 || mb.len != (Py_ssize_t)n || rb.len != mb.len || ob.len != mb.len) {
        PyErr_SetString(PyExc_ValueError, "unrule: mask, rules and out must be height x width bytes");
        goto done;
    }
    const unsigned char *mask = mb.buf, *rules = rb.buf;
    unsigned char *out = ob.buf;
    int side = h < w ? h : w, t = side / 16 * 2 + 1;
    if (t < 3) t = 3;
    /* A window's scratch holds the padded rows, h x (w + t), or columns, (h + t) x w. */
    size_t big = (size_t)(h + t) * (w + t);
    scratch = scratch_get(3 * n + 2 * big);
    if (!scratch) { PyErr_NoMemory(); goto done; }
    unsigned char *rest = scratch, *closed = rest + n, *mid = closed + n, *buf = mid + n;
    unsigned char *tmp = buf + big;
    for (size_t i = 0; i < n; i++) rest[i] = mask[i] & (unsigned char)~rules[i];
    close_square(rest, closed, h, w, t, mid, buf, tmp);
    for (size_t i = 0; i < n; i++) out[i] = rest[i] | (closed[i] & rules[i]);
    result = Py_None;
done:
    PyBuffer_Release(&mb);
    PyBuffer_Release(&rb);
    PyBuffer_Release(&ob);
    Py_XINCREF(result);
    return result;
}

/* Counts of each level of p[0..n) added to four histograms, one for every fourth pixel:
   a run of one level (the paper) no longer makes each count wait on the one before. */
static void count_levels(const unsigned char *p, size_t n, unsigned int part[4][256])
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        part[0][p[i]]++;
        part[1][p[i + 1]]++;
        part[2][p[i + 2]]++;
        part[3][p[i + 3]]++;
    }
    for (; i < n; i++) part[0][p[i]]++;
}

static void sum_levels(unsigned int part[4][256], long long hist[256])
{
    for (int v = 0; v < 256; v++)
        hist[v] = (long long)part[0][v] + part[1][v] + part[2][v] + part[3][v];
}

/* stretch(ink, out, height, width) -> bool: imaging._stretch_numpy, the paper to 0 and the
   darkest stroke to 255, written into `out`; False where there is no contrast. Its levels
   are numpy's float32 arithmetic, rounded half to even as numpy rounds. */
static PyObject *stretch(PyObject *self, PyObject *args)
{
    Py_buffer ib, ob;
    int h, w;
    if (!PyArg_ParseTuple(args, "y*w*ii", &ib, &ob, &h, &w)) return NULL;
    PyObject *result = NULL;
    if (h <= 0 || w <= 0 || ib.len != (Py_ssize_t)h * w || ob.len != ib.len) {
        PyErr_SetString(PyExc_ValueError, "stretch: ink and out must both be height x width bytes");
        goto done;
    }
    const unsigned char *ink = ib.buf;
    unsigned char *out = ob.buf;
    size_t n = (size_t)h * w;
    long long hist[256], cum[256];
    unsigned int part[4][256] = {{0}};
    count_levels(ink, n, part);
    sum_levels(part, hist);
    int peak = 0;
    for (int v = 255; v >= 0; v--)
        if (hist[v]) { peak = v; break; }
    long long total = 0;
    for (int v = 0; v < 256; v++) cum[v] = total += hist[v];
    int median = 0;
    while (median < 255 && cum[median] < (total + 1) / 2) median++;
    /* The commonest level at or below the median, by five-level windows: np.convolve of
       hist[:median + 1] with ones(5), mode "same" (centred, and five long if shorter). */
    int m = median + 1, len = m > 5 ? m : 5, start = ((m < 5 ? m : 5) - 1) / 2, paper = 0;
    long long best = -1;
    for (int i = 0; i < len; i++) {
        int j = i + start, k0 = j - 4 < 0 ? 0 : j - 4, k1 = j < m - 1 ? j : m - 1;
        long long sum = 0;
        for (int k = k0; k <= k1; k++) sum += hist[k];
        if (sum > best) { best = sum; paper = i; }
    }
    long long below = cum[paper];
    int low = paper;
    if (below) {
        low = 0;
        while (low < 255 && cum[low] < below / 4) low++;
    }
    double noise = (paper - low > 0 ? paper - low : 0) * 1.5;
    if (peak - paper < 32) { result = Py_False; goto done; }
    double floor_ = paper + 4 * noise + 2;
    if (peak - floor_ < 16) floor_ = paper + (peak - paper) / 2.0;
    unsigned char lut[256];
    float f = (float)floor_, scale = (float)(255.0 / (peak - floor_));
    for (int v = 0; v < 256; v++) {
        float t = ((float)v - f) * scale;
        t = t < 0.0f ? 0.0f : t > 255.0f ? 255.0f : t;
        lut[v] = (unsigned char)nearbyintf(t);
    }
    for (size_t i = 0; i < n; i++) out[i] = lut[ink[i]];
    result = Py_True;
done:
    PyBuffer_Release(&ib);
    PyBuffer_Release(&ob);
    Py_XINCREF(result);
    return result;
}

/* A run of ink: row y of the inked box, columns x0 to x1 inclusive; its component. */
typedef struct {
    int y, x0, x1, parent;
} Run;

static int root_of(Run *runs, int i)
{
    while (runs[i].parent != i) {
        runs[i].parent = runs[runs[i].parent].parent;
        i = runs[i].parent;
    }
    return i;
}

/* imaging._comb_ticks on the components' stats (st: left, top, width, height, area, n x 5,
   row 0 the background's; comp: each run's component): ticks get area 0, as keep_digit
   gives them. A stub touches the rules (h x w, the box at x0, y0) where a pixel of one of
   its runs lies within one (3 x 3) of a rule's. idx, tick: scratch of n. */
static void clear_ticks(int *st, int n, const Run *runs, const int *comp, int nruns,
                        const unsigned char *rules, int h, int w, int x0, int y0, int *idx,
                        unsigned char *tick)
{
    int side = h > w ? h : w, stubs = 0;
    /* Stubs: upright, thin, filled, under half the cell tall (numpy's float64 arithmetic). */
    memset(tick, 0, n);
    for (int i = 1; i < n; i++) {
        const int *c = st + 5 * i;
        if (3 * c[2] <= c[3] && (double)c[4] >= 0.6 * c[2] * c[3] && c[3] <= side / 2) {
            tick[i] = 1;
            stubs++;
        }
    }
    if (stubs < 2) return;
    int touching = 0;
    for (int r = 0; r < nruns; r++) {
        int i = comp[r];
        if (tick[i] != 1) continue; /* not a stub, or already found touching (2) */
        int y = y0 + runs[r].y, xa = x0 + runs[r].x0 - 1, xb = x0 + runs[r].x1 + 1;
        if (xa < 0) xa = 0;
        if (xb > w - 1) xb = w - 1;
        for (int yy = y - 1; yy <= y + 1 && tick[i] == 1; yy++)
            if (yy >= 0 && yy < h && count_ink(rules + (size_t)yy * w + xa, xb - xa + 1)) {
                tick[i] = 2;
                idx[touching++] = i;
            }
    }
    if (touching < 2) return;
    /* Ticks: at least two of one length (each within its own tolerance of the other's:
       numpy's float32 arithmetic), the stub itself counted as one. */
    for (int s = 0; s < touching; s++) {
        float length = (float)st[5 * idx[s] + 3], tolerance = 0.15f * length;
        if (tolerance < 2.0f) tolerance = 2.0f;
        int alike = 0;
        for (int t = 0; t < touching; t++)
            alike += fabsf(length - (float)st[5 * idx[t] + 3]) <= tolerance;
        tick[idx[s]] = alike >= 2 ? 3 : 2;
    }
    for (int s = 0; s < touching; s++)
        if (tick[idx[s]] == 3) st[5 * idx[s] + 4] = 0;
}

/* imaging._keep_numpy's choice on the components' stats (st as for clear_ticks; the box at
   x0, y0 of an h x w cell): 1 in chosen[i] for each component kept; 0 where nothing is
   left. eligible, kept_piece: scratch of n. */
static int choose(const int *st, int n, int h, int w, int x0, int y0, unsigned char *chosen,
                  unsigned char *eligible, unsigned char *kept_piece)
{
    memset(chosen, 0, n);
    /* The largest; of equals, the topmost, then leftmost, then the first in raster order
       (components are numbered so). */
    int main = 1;
    for (int i = 2; i < n; i++) {
        const int *a = st + 5 * i, *b = st + 5 * main;
        if (a[4] > b[4] || (a[4] == b[4] && (a[1] < b[1] || (a[1] == b[1] && a[0] < b[0]))))
            main = i;
    }
    double least = 0.0005 * h * w;
    if (st[5 * main + 4] < (least > 3 ? least : 3)) return 0;
    if (n == 2) {
        chosen[1] = 1;
        return 1;
    }
    int x = st[5 * main] + x0, y = st[5 * main + 1] + y0, bw = st[5 * main + 2];
    int bh = st[5 * main + 3], biggest = st[5 * main + 4];
    int mx = bw / 2 + 1 > bh / 4 ? bw / 2 + 1 : bh / 4, my = bh / 3 + 1;
    if (mx < 2) mx = 2;
    if (my < 2) my = 2;
    double speck = 0.04 * biggest < 2 ? 2 : 0.04 * biggest;
    for (int i = 1; i < n; i++) {
        const int *c = st + 5 * i;
        int cx = c[0] + x0, cy = c[1] + y0, area = c[4];
        int at_edge = cx == 0 || cy == 0 || cx + c[2] == w || cy + c[3] == h;
        eligible[i] = i == main || (area >= speck && !(at_edge && area < 0.25 * biggest));
        kept_piece[i] = eligible[i] && (i == main || (cx < x + bw + mx && cx + c[2] > x - mx
                                                     && cy < y + bh + my && cy + c[3] > y - my));
    }
    /* Pieces within `gap` of a kept piece's box are kept too, chain by chain. */
    int side = h > w ? h : w, gap = (int)nearbyint(0.12 * side);
    if (gap < 2) gap = 2;
    for (int more = 1; more;) {
        more = 0;
        for (int i = 1; i < n; i++) {
            if (!kept_piece[i]) continue;
            const int *a = st + 5 * i;
            for (int j = 1; j < n; j++) {
                if (!eligible[j] || kept_piece[j]) continue;
                const int *b = st + 5 * j;
                int gx = (a[0] > b[0] ? a[0] : b[0]) - (a[0] + a[2] < b[0] + b[2] ? a[0] + a[2] : b[0] + b[2]);
                int gy = (a[1] > b[1] ? a[1] : b[1]) - (a[1] + a[3] < b[1] + b[3] ? a[1] + a[3] : b[1] + b[3]);
                if (gx <= gap && gy <= gap) kept_piece[j] = more = 1;
            }
        }
    }
    for (int i = 1; i < n; i++) chosen[i] = kept_piece[i];
    return 1;
}

/* digit(mask, rules or None, out, height, width) -> bool: imaging.keep_digit, the
   components that make up the digit as 1 in out (zeroed here); False: nothing is left.

   The mask's 8-connected components by runs of ink (a cell's ink is a few hundred runs
   where its box is thousands of pixels): each run joins those of the row above that
   touch it, corners included, by union-find; a component's number is the order of its
   first run (its top row, then leftmost), and its stats (OpenCV's left, top, width,
   height, area) come from its runs. The same components and stats as OpenCV's labelling
   of the inked box, which the reference uses; only the numbering differs, which the
   choice does not depend on. */
static PyObject *digit_pieces(PyObject *self, PyObject *args)
{
    Py_buffer mb, ob, rb = {0};
    PyObject *rules_arg;
    int h, w;
    if (!PyArg_ParseTuple(args, "y*Ow*ii", &mb, &rules_arg, &ob, &h, &w)) return NULL;
    PyObject *result = NULL;
    int have_rules = rules_arg != Py_None;
    if (have_rules && PyObject_GetBuffer(rules_arg, &rb, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&mb);
        PyBuffer_Release(&ob);
        return NULL;
    }
    size_t n = (size_t)h * w;
    if (h <= 0 || w <= 0 || mb.len != (Py_ssize_t)n || ob.len != mb.len
        || (have_rules && rb.len != mb.len)) {
        PyErr_SetString(PyExc_ValueError, "digit: mask, rules and out must be height x width bytes");
        goto done;
    }
    const unsigned char *mask = mb.buf;
    unsigned char *out = ob.buf;
    memset(out, 0, n);
    int bx0, bx1, by0, by1; /* the inked box */
    if (!bounding_box(mask, h, w, &bx0, &bx1, &by0, &by1)) {
        result = Py_False;
        Py_INCREF(result);
        goto done;
    }
    int iw = bx1 - bx0 + 1, ih = by1 - by0 + 1;
    /* At most one run in two pixels of a row, and a row's worth more. */
    size_t most = (size_t)ih * (iw / 2 + 1);
    Run *runs = scratch_get(most * sizeof(Run) + most * sizeof(int) + (most + 1) * 5 * sizeof(int)
                            + (most + 1) * (sizeof(int) + 3));
    if (!runs) { PyErr_NoMemory(); goto done; }
    int *comp = (int *)(runs + most), *st = comp + most, *idx = st + 5 * (most + 1);
    unsigned char *chosen = (unsigned char *)(idx + most + 1), *eligible = chosen + most + 1;
    unsigned char *kept_piece = eligible + most + 1;
    int nruns = 0, above = 0, above_end = 0; /* the row above's runs: [above, above_end) */
    for (int y = 0; y < ih; y++) {
        const unsigned char *row = mask + (size_t)(by0 + y) * w + bx0;
        int start = nruns, a = above;
        for (int x = 0; x < iw;) {
            if (!row[x]) { x++; continue; }
            int x0 = x;
            while (x < iw && row[x]) x++;
            Run *r = runs + nruns;
            r->y = y;
            r->x0 = x0;
            r->x1 = x - 1;
            r->parent = nruns;
            /* Runs above that touch this one, corners included: x0 - 1 <= their x1 and
               their x0 <= x1 + 1. Those ending left of it are passed for the next run too. */
            while (a < above_end && runs[a].x1 < x0 - 1) a++;
            for (int b = a; b < above_end && runs[b].x0 <= r->x1 + 1; b++) {
                int ra = root_of(runs, b), rb_ = root_of(runs, nruns);
                if (ra < rb_) runs[rb_].parent = ra;
                else if (rb_ < ra) runs[ra].parent = rb_;
            }
            nruns++;
        }
        above = start;
        above_end = nruns;
    }
    /* Components numbered in order of their first run (a root is its component's first
       run: unions keep the lower index), from 1; row 0 of st is the background's. */
    int ncomp = 1;
    for (int r = 0; r < nruns; r++) {
        int root = root_of(runs, r);
        if (root == r) {
            comp[r] = ncomp;
            int *c = st + 5 * ncomp;
            c[0] = runs[r].x0;  /* left and right for now */
            c[1] = runs[r].y;
            c[2] = runs[r].x1;
            c[3] = runs[r].y;   /* bottom for now */
            c[4] = 0;
            ncomp++;
        } else {
            comp[r] = comp[root];
        }
        int *c = st + 5 * comp[r];
        if (runs[r].x0 < c[0]) c[0] = runs[r].x0;
        if (runs[r].x1 > c[2]) c[2] = runs[r].x1;
        if (runs[r].y > c[3]) c[3] = runs[r].y;
        c[4] += runs[r].x1 - runs[r].x0 + 1;
    }
    for (int i = 1; i < ncomp; i++) {
        int *c = st + 5 * i;
        c[2] = c[2] - c[0] + 1;
        c[3] = c[3] - c[1] + 1;
    }
    /* A comb's ticks are printed, not written: never the digit, nor a part of it. */
    if (ncomp > 3 && have_rules && count_ink(rb.buf, (int)n))
        clear_ticks(st, ncomp, runs, comp, nruns, rb.buf, h, w, bx0, by0, idx, chosen);
    if (!choose(st, ncomp, h, w, bx0, by0, chosen, eligible, kept_piece)) {
        result = Py_False;
        Py_INCREF(result);
        goto done;
    }
    for (int r = 0; r < nruns; r++)
        if (chosen[comp[r]])
            memset(out + (size_t)(by0 + runs[r].y) * w + bx0 + runs[r].x0, 1,
                   runs[r].x1 - runs[r].x0 + 1);
    result = Py_True;
    Py_INCREF(result);
done:
    PyBuffer_Release(&mb);
    PyBuffer_Release(&ob);
    if (have_rules) PyBuffer_Release(&rb);
    return result;
}

/* imaging._level_numpy on the h x w a and rules: how dark the ink is away from the rules,
   the 98th percentile of the levels above 0 of the pixels not within one pixel (3 x 3) of
   a rule, as the float32 cumulative histogram finds it (-1: out of memory). */
static int ink_level(const unsigned char *a, const unsigned char *rules, int h, int w)
{
    unsigned char *near = scratch_get((size_t)h * w);
    if (!near) return -1;
    /* The rules widened by a pixel along the rows, then across them (past the edge: none). */
    for (int y = 0; y < h; y++) {
        const unsigned char *r = rules + (size_t)y * w;
        unsigned char *d = near + (size_t)y * w;
        d[0] = r[0] | (w > 1 ? r[1] : 0);
        for (int x = 1; x + 1 < w; x++) d[x] = r[x - 1] | r[x] | r[x + 1];
        if (w > 1) d[w - 1] = r[w - 2] | r[w - 1];
    }
    /* Pixels near a rule are counted as level 0, which is not counted (hist[0] = 0). Eight
       pixels at a time: after the stretch most of a cell is paper at 0 (the eight are
       passed over), and most of the rest lies nowhere near a rule (counted without a test
       each) or all of it by one (a rule's own pixels: passed over). */
    unsigned int part[4][256] = {{0}};
    for (int y = 0; y < h; y++) {
        const unsigned char *up = near + (size_t)(y > 0 ? y - 1 : y) * w;
        const unsigned char *mid = near + (size_t)y * w;
        const unsigned char *down = near + (size_t)(y + 1 < h ? y + 1 : y) * w;
        const unsigned char *p = a + (size_t)y * w;
        int x = 0;
        for (; x + 8 <= w; x += 8) {
            uint64_t ink, u, m, d;
            memcpy(&ink, p + x, 8);
            if (!ink) continue;
            memcpy(&u, up + x, 8);
            memcpy(&m, mid + x, 8);
            memcpy(&d, down + x, 8);
            uint64_t by_rule = u | m | d;
            if (!by_rule) {
                for (int k = x; k < x + 8; k++) part[k & 3][p[k]]++;
            } else if (by_rule != UINT64_MAX) {
                for (int k = x; k < x + 8; k++) part[k & 3][(up[k] | mid[k] | down[k]) ? 0 : p[k]]++;
            }
        }
        for (; x < w; x++) part[x & 3][(up[x] | mid[x] | down[x]) ? 0 : p[x]]++;
    }
    long long hist[256];
    sum_levels(part, hist);
    hist[0] = 0;
    long long total = 0;
    for (int v = 0; v < 256; v++) total += hist[v];
    int found = 0;
    if (total > 0) {
        float target = 0.98f * (float)total, cum = 0;
        long long sum = 0;
        for (found = 0; found < 255; found++) {
            sum += hist[found];
            cum = (float)sum;
            if (cum >= target) break;
        }
    }
    return found;
}

/* level(a, rules, height, width) -> int: ink_level, for the tests. */
static PyObject *level(PyObject *self, PyObject *args)
{
    Py_buffer ab, rb;
    int h, w;
    if (!PyArg_ParseTuple(args, "y*y*ii", &ab, &rb, &h, &w)) return NULL;
    PyObject *result = NULL;
    if (h <= 0 || w <= 0 || ab.len != (Py_ssize_t)h * w || rb.len != ab.len) {
        PyErr_SetString(PyExc_ValueError, "level: a and rules must both be height x width bytes");
        goto done;
    }
    int found = ink_level(ab.buf, rb.buf, h, w);
    result = found < 0 ? PyErr_NoMemory() : PyLong_FromLong(found);
done:
    PyBuffer_Release(&ab);
    PyBuffer_Release(&rb);
    return result;
}

/* Python's slice of a sequence of len items from start to stop (a negative end counts
   from the end; clipped): its first item in *lo and the end in *hi (lo >= hi: empty). */
static void py_slice(int start, int stop, int len, int *lo, int *hi)
{
    if (start < 0) start += len;
    if (stop < 0) stop += len;
    *lo = start < 0 ? 0 : start > len ? len : start;
    *hi = stop < 0 ? 0 : stop > len ? len : stop;
}

/* imaging._encloses: whether what is left of the h x w mask without `box` lies mostly well
   inside the box (or nothing is left), or is mostly one 8-connected piece (1 or 0; -1 out
   of memory). The band inside the box is cut as the reference slices it, negative ends
   and all. */
static int encloses(const unsigned char *mask, const unsigned char *box, int h, int w)
{
    size_t n = (size_t)h * w;
    unsigned char *scratch = scratch_get(n * sizeof(int) + n);
    if (!scratch) return -1;
    int *stack = (int *)scratch;
    unsigned char *rest = scratch + n * sizeof(int);
    int total = 0, boxed = 0;
    for (size_t i = 0; i < n; i++) {
        rest[i] = mask[i] & (unsigned char)~box[i];
        total += rest[i] != 0;
        boxed += box[i] != 0;
    }
    if ((double)total <= 0.1 * boxed) return 1; /* nothing, or the box's own corner pixels */
    int x0, x1, y0, y1;
    bounding_box(box, h, w, &x0, &x1, &y0, &y1); /* (0, 0, 0, 0) when empty, as OpenCV's */
    int bw = x1 - x0 + 1, bh = y1 - y0 + 1;
    int m = (int)(0.15 * (bh - 1 < bw - 1 ? bh - 1 : bw - 1));
    if (m < 2) m = 2;
    int ys, ye, xs, xe, inside = 0;
    py_slice(y0 + m, y0 + bh - m, h, &ys, &ye);
    py_slice(x0 + m, x0 + bw - m, w, &xs, &xe);
    for (int y = ys; y < ye; y++)
        if (xe > xs) inside += count_ink(rest + (size_t)y * w + xs, xe - xs);
    if ((double)inside >= 0.6 * total) return 1;
    int largest = 0;
    for (size_t i = 0; i < n && (double)largest < 0.6 * total; i++)
        if (rest[i]) {
            int area = clear_piece(rest, h, w, i, stack);
            if (area > largest) largest = area;
        }
    return (double)largest >= 0.6 * total;
}

/* imaging.rules_of on the h x w mask, its pixels written into `out` (0, or -1 out of
   memory): the box its long runs both ways make, where they meet twice and enclose the
   rest; else its runs across (nearly) the whole cell. */
static int find_rules(const unsigned char *mask, unsigned char *out, int h, int w)
{
    size_t n = (size_t)h * w;
    unsigned char *h_long = held_get(4 * n);
    if (!h_long) return -1;
    unsigned char *v_long = h_long + n, *h_full = v_long + n, *v_full = h_full + n;
    int hl = find_runs(mask, h_long, h, w, 1, 0.55, 0);
    int vl = hl < 0 ? -1 : find_runs(mask, v_long, h, w, 0, 0.55, 0);
    if (vl < 0) return -1;
    if (hl && vl) {
        for (size_t i = 0; i < n; i++) out[i] = h_long[i] | v_long[i];
        int meet = meet_twice(h_long, v_long, h, w);
        int inside = meet > 0 ? encloses(mask, out, h, w) : meet;
        if (inside < 0) return -1;
        if (inside) return 0;
    }
    int hf = hl ? find_runs(mask, h_full, h, w, 1, 0.9, 1) : 0;
    int vf = vl && hf >= 0 ? find_runs(mask, v_full, h, w, 0, 0.9, 1) : hf < 0 ? -1 : 0;
    if (vf < 0) return -1;
    if (!hf && (!vf || (double)count_ink(v_full, (int)n) > 0.8 * count_ink(mask, (int)n)))
        memset(out, 0, n);  /* no rule; or upright runs and nothing else (a tall 1) */
    else if (!hf || !vf)
        memcpy(out, hf ? h_full : v_full, n);
    else
        for (size_t i = 0; i < n; i++) out[i] = h_full[i] | v_full[i];
    return 0;
}

/* rules(mask, out, height, width): imaging.rules_of, writing the rules into out. */
static PyObject *rules(PyObject *self, PyObject *args)
{
    Py_buffer mb, ob;
    int h, w;
    if (!PyArg_ParseTuple(args, "y*w*ii", &mb, &ob, &h, &w)) return NULL;
    PyObject *result = NULL;
    if (h <= 0 || w <= 0 || mb.len != (Py_ssize_t)h * w || ob.len != mb.len) {
        PyErr_SetString(PyExc_ValueError, "rules: mask and out must both be height x width bytes");
        goto done;
    }
    if (find_rules(mb.buf, ob.buf, h, w) < 0) { PyErr_NoMemory(); goto done; }
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&mb);
    PyBuffer_Release(&ob);
    return result;
}

/* ink_mask(a, mask, rules, height, width): imaging.ink_mask, writing the cell's clear ink
   and its printed rules into mask and rules. The thresholds are OpenCV's for 8-bit images
   (imaging._above): a pixel above the level's floor. */
static PyObject *ink_mask(PyObject *self, PyObject *args)
{
    Py_buffer ab, mb, rb;
    int h, w;
    if (!PyArg_ParseTuple(args, "y*w*w*ii", &ab, &mb, &rb, &h, &w)) return NULL;
    PyObject *result = NULL;
    size_t n = (size_t)h * w;
    if (h <= 0 || w <= 0 || ab.len != (Py_ssize_t)n || mb.len != ab.len || rb.len != ab.len) {
        PyErr_SetString(PyExc_ValueError, "ink_mask: a, mask and rules must be height x width bytes");
        goto done;
    }
    const unsigned char *a = ab.buf;
    unsigned char *mask = mb.buf, *found = rb.buf;
    int t = (int)floor(0.35 * 255);
    for (size_t i = 0; i < n; i++) mask[i] = a[i] > t ? 255 : 0;
    if (find_rules(mask, found, h, w) < 0) { PyErr_NoMemory(); goto done; }
    if (count_ink(found, (int)n)) {
        int level = ink_level(a, found, h, w);
        if (level < 0) { PyErr_NoMemory(); goto done; }
        if (0 < level && level < 0.8 * 255) {
            /* judged against the digit's own darkness, not the box's */
            t = (int)floor(0.35 * level);
            for (size_t i = 0; i < n; i++) mask[i] = a[i] > t ? 255 : 0;
            if (find_rules(mask, found, h, w) < 0) { PyErr_NoMemory(); goto done; }
        }
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&ab);
    PyBuffer_Release(&mb);
    PyBuffer_Release(&rb);
    return result;
}

/* crop(a, kept, height, width) -> (bytearray, crop_width, crop_height): imaging._fit_numpy's
   first steps. The box around kept's nonzero pixels (cv2.boundingRect), the kept pixels
   widened by a 3 x 3 square within it (cv2.dilate: pixels past the box's edge ignored, and
   kept has none there anyway), and a's pixels times that (numpy's a * near). kept is 0 and
   1, as keep writes it: the widening ORs (a square's maximum, for those), by along_rows and
   across_rows as corners widens its runs. */
static PyObject *crop(PyObject *self, PyObject *args)
{
    Py_buffer ab, kb;
    int h, w;
    if (!PyArg_ParseTuple(args, "y*y*ii", &ab, &kb, &h, &w)) return NULL;
    PyObject *result = NULL;
    if (h <= 0 || w <= 0 || ab.len != (Py_ssize_t)h * w || kb.len != ab.len) {
        PyErr_SetString(PyExc_ValueError, "crop: a and kept must both be height x width bytes");
        goto done;
    }
    const unsigned char *a = ab.buf, *kept = kb.buf;
    int x0, x1, y0, y1;
    if (!bounding_box(kept, h, w, &x0, &x1, &y0, &y1)) {  /* nothing kept: an empty crop, as cv2.boundingRect's (0, 0, 0, 0) */
        result = Py_BuildValue("(Nii)", PyByteArray_FromStringAndSize(NULL, 0), 0, 0);
        goto done;
    }
    int bw = x1 - x0 + 1, bh = y1 - y0 + 1;
    result = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)bw * bh);
    if (result == NULL) goto done;
    unsigned char *out = (unsigned char *)PyByteArray_AS_STRING(result);
    size_t n = (size_t)bw * bh, big = (size_t)(bh + 3) * (bw + 3);
    unsigned char *part = scratch_get(3 * n + 2 * big);
    if (part == NULL) { Py_CLEAR(result); PyErr_NoMemory(); goto done; }
    unsigned char *along = part + n, *near = along + n, *buf = near + n, *tmp = buf + big;
    for (int y = 0; y < bh; y++)
        memcpy(part + (size_t)y * bw, kept + (size_t)(y0 + y) * w + x0, bw);
    along_rows(part, along, bh, bw, 3, 0, buf, tmp);
    across_rows(along, near, bh, bw, 3, 0, buf, tmp);
    for (int y = 0; y < bh; y++) {
        const unsigned char *src = a + (size_t)(y0 + y) * w + x0, *m = near + (size_t)y * bw;
        unsigned char *dst = out + (size_t)y * bw;
        for (int x = 0; x < bw; x++) dst[x] = (unsigned char)(src[x] * m[x]);
    }
    result = Py_BuildValue("(Nii)", result, bw, bh);
done:
    PyBuffer_Release(&ab);
    PyBuffer_Release(&kb);
    return result;
}

/* place(crop, field, height, width, side) -> int: imaging._fit_numpy's last steps. The
   crop's centre of mass (cv2.moments' m10 / m00 and m01 / m00: exact integer sums in
   doubles), its paste into the zeroed side x side field with that centre at the field's
   (Python's round: half to even, as nearbyint in the default rounding mode), clipped; the
   field's brightest pixel (cv2.minMaxLoc), or -1 when the crop has no ink (m00 = 0). */
static PyObject *place(PyObject *self, PyObject *args)
{
    Py_buffer cb, fb;
    int h, w, side;
    if (!PyArg_ParseTuple(args, "y*w*iii", &cb, &fb, &h, &w, &side)) return NULL;
    PyObject *result = NULL;
    if (h <= 0 || w <= 0 || side <= 0 || cb.len != (Py_ssize_t)h * w ||
        fb.len != (Py_ssize_t)side * side) {
        PyErr_SetString(PyExc_ValueError, "place: crop must be height x width, field side x side");
        goto done;
    }
    const unsigned char *c = cb.buf;
    unsigned char *field = fb.buf;
    long long m00 = 0, m10 = 0, m01 = 0;
    for (int y = 0; y < h; y++) {
        long long row = 0, rowx = 0;
        for (int x = 0; x < w; x++) {
            row += c[(size_t)y * w + x];
            rowx += (long long)x * c[(size_t)y * w + x];
        }
        m00 += row;
        m10 += rowx;
        m01 += (long long)y * row;
    }
    if (m00 <= 0) { result = PyLong_FromLong(-1); goto done; }
    double cy = (double)m01 / (double)m00, cx = (double)m10 / (double)m00;
    int top = (int)nearbyint(side / 2.0 - cy), left = (int)nearbyint(side / 2.0 - cx);
    int fy0 = top > 0 ? top : 0, fx0 = left > 0 ? left : 0;
    int fy1 = top + h < side ? top + h : side, fx1 = left + w < side ? left + w : side;
    int peak = 0;
    for (int y = fy0; y < fy1; y++)
        for (int x = fx0; x < fx1; x++) {
            unsigned char v = c[(size_t)(y - top) * w + (x - left)];
            field[(size_t)y * side + x] = v;
            if (v > peak) peak = v;
        }
    result = PyLong_FromLong(peak);
done:
    PyBuffer_Release(&cb);
    PyBuffer_Release(&fb);
    return result;
}

static PyMethodDef methods[] = {
    {"runs", runs, METH_VARARGS,
     "runs(mask, out, height, width, horizontal, fraction, spanning) -> bool: "
     "imaging._runs_numpy, writing its pixels into out (for the tests)."},
    {"ink", ink, METH_VARARGS,
     "ink(rgb, gray, out, height, width): imaging.ink_of's colour path, into out."},
    {"corners", corners, METH_VARARGS,
     "corners(h_runs, v_runs, height, width) -> bool: the runs widened meet twice or more."},
    {"rules", rules, METH_VARARGS,
     "rules(mask, out, height, width): imaging.rules_of, into out."},
    {"ink_mask", ink_mask, METH_VARARGS,
     "ink_mask(a, mask, rules, height, width): imaging.ink_mask, into mask and rules."},
    {"unrule", unrule, METH_VARARGS,
     "unrule(mask, rules, out, height, width): imaging.remove_rules_numpy, into out."},
    {"digit", digit_pieces, METH_VARARGS,
     "digit(mask, rules or None, out, height, width) -> bool: imaging.keep_digit, into out."},
    {"level", level, METH_VARARGS,
     "level(a, rules, height, width) -> int: imaging._level_numpy."},
    {"stretch", stretch, METH_VARARGS,
     "stretch(ink, out, height, width) -> bool: imaging._stretch, writing into out."},
    {"crop", crop, METH_VARARGS,
     "crop(a, kept, height, width) -> (bytearray, width, height): imaging._fit_numpy's crop."},
    {"place", place, METH_VARARGS,
     "place(crop, field, height, width, side) -> int: imaging._fit_numpy's paste; its peak, "
     "or -1 without ink."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cleanup", "Hot steps of the cell cleanup, compiled.", -1, methods,
};

PyMODINIT_FUNC PyInit__cleanup(void) { return PyModule_Create(&module); }
