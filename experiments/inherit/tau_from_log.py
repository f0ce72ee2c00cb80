#!/usr/bin/env python3
# Kendall tau-b and Spearman rho of the per-row lines `minas bench inherit` prints on stderr
# ("  I/N ARCH  scratch S  inherited W (P% of the parameters)") against the table's target:
# the figures of a run stopped before its end.
import sys, re
def tau_b(x, y):
    c = d = tx = ty = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            a, b = x[i] - x[j], y[i] - y[j]
            if a == 0 and b == 0: continue
            if a == 0: tx += 1
            elif b == 0: ty += 1
            elif (a > 0) == (b > 0): c += 1
            else: d += 1
    return (c - d) / (((c + d + tx) * (c + d + ty)) ** 0.5)
def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i]); r = [0.0] * len(v); i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]: j += 1
        for k in range(i, j + 1): r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r
def rho(x, y):
    rx, ry = ranks(x), ranks(y); n = len(x); mx, my = sum(rx) / n, sum(ry) / n
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return num / (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
table, target, log = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [l.rstrip('\n').split(',') for l in open(table)]
head, rows = rows[0], rows[1:]
t = {r[head.index('arch')]: float(r[head.index(target)]) for r in rows}
xs, ws, ys, shares = [], [], [], []
for l in open(log):
    m = re.match(r'\s+\d+/\d+ (\S+)\s+scratch ([\d.]+)\s+inherited ([\d.]+) \((\d+)%', l)
    if m:
        xs.append(float(m[2])); ws.append(float(m[3])); ys.append(t[m[1]]); shares.append(int(m[4]))
n = len(xs)
print(f'target={target} rows={n}')
for name, v in (('scratch', xs), ('inherited', ws)):
    print(f'{name:10s} tau={tau_b(v, ys):.4f} rho={rho(v, ys):.4f} mean_val={sum(v)/n:.2f}')
print(f'inherited better on {sum(w > x for w, x in zip(ws, xs))} of {n}; mean share {sum(shares)/n:.1f}%')
