#!/usr/bin/env python3
"""Scores a backtest against generator labels the way tests/eval.rs does, so
detection and health changes can be tried with the release binary and config
overrides instead of a rebuild of the tests. Standard library only.

  churnwatch generate --seed 7 --customers 1500 --days 150 --out g.jsonl --labels l.jsonl
  churnwatch backtest --input g.jsonl --until 2026-04-15T00:00:00Z --customers-out c.jsonl
  scripts/eval-quality.py auc c.jsonl l.jsonl 2026-04-15T00:00:00Z [--by-story]

  churnwatch generate --seed 7 --customers 1500 --days 120 --out p.jsonl --labels pl.jsonl
  churnwatch backtest --input p.jsonl --alerts-out a.jsonl
  scripts/eval-quality.py pr a.jsonl pl.jsonl
  scripts/eval-quality.py table s7=a7.jsonl,l7.jsonl s1=a1.jsonl,l1.jsonl ...

  churnwatch generate --profile retail --seed 1 --customers 12000 --out r.jsonl
  churnwatch backtest --input r.jsonl --until 2026-10-02T00:00:00Z --customers-out rc.jsonl
  scripts/eval-quality.py retail r.jsonl rc.jsonl 2026-10-02T00:00:00Z

(both backtests with key_features = ["reports","exports"], as the test's config).
`auc`: Mann-Whitney AUC of 100 - health score at T for churn in (T, T+60 d],
customers churned by T left out. `pr`: per alert, precision and recall, a hit
being a firing whose starts_at is within 14 days after the label's onset
(`churned`: after churn_at)."""
import bisect
import json
import sys
from collections import defaultdict
from datetime import datetime, timedelta


def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def auc(pos, neg):
    neg = sorted(neg)
    wins = 0.0
    for p in pos:
        lo, hi = bisect.bisect_left(neg, p), bisect.bisect_right(neg, p)
        wins += lo + 0.5 * (hi - lo)
    return wins / (len(pos) * len(neg))


def health_auc(customers, labels, t, by_story):
    label = {l["customer_id"]: l for l in labels}
    pos, neg = [], []
    for row in customers:
        l = label.get(row["customer_id"])
        churn = ts(l["churn_at"]) if l and l["churn_at"] else None
        if churn and churn <= t:
            continue
        risk = 100 - row["health_score"]
        if churn and churn <= t + timedelta(days=60):
            pos.append((risk, l["story"]))
        else:
            neg.append((risk, l["story"] if l else "none"))
    negs = [r for r, _ in neg]
    print(f"AUC {auc([r for r, _ in pos], negs):.4f} over {len(pos)} churners and {len(neg)} others")
    if by_story:
        groups = defaultdict(list)
        for r, s in pos:
            groups[s].append(r)
        for s, rs in sorted(groups.items()):
            print(f"  churners {s:24} {len(rs):4}  AUC {auc(rs, negs):.3f}")
        groups = defaultdict(list)
        for r, s in neg:
            groups[s].append(r)
        for s, rs in sorted(groups.items()):
            print(f"  others   {s:24} {len(rs):4}  mean risk {sum(rs) / len(rs):5.1f}")


KINDS = ["engagement_drop", "inactivity", "seat_contraction", "key_feature_unused",
         "downgrade", "payment_failed", "churned", "detractor", "support_spike"]


LEADING = {"engagement_drop", "inactivity", "seat_contraction", "key_feature_unused",
           "detractor", "support_spike", "downgrade", "payment_failed"}
EARLY_WARNING_DAYS = 60


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))] if xs else float("nan")


def precision_recall(alerts, labels, show_fp=0, out=print):
    """Per alert: precision, recall, healthy customers alerted, detection
    delay. A firing is right when it is a labelled alert of the customer that
    starts within the label's detect_within_days (default 14) after its onset
    (churned: after churn_at), or an early warning: a leading signal of a
    customer that churns within 60 days after it starts."""
    by_customer = defaultdict(list)
    for l in labels:
        by_customer[l["customer_id"]].append(l)

    def match(d):
        for l in by_customer.get(d["customer_id"], []):
            onset = ts(l["churn_at"]) if d["alert"] == "churned" and l["churn_at"] else ts(l["onset"])
            within = timedelta(days=l.get("detect_within_days", 14))
            if d["alert"] in l["alerts"] and onset <= ts(d["starts_at"]) <= onset + within:
                return l, onset
            # An alert the story may also cause (its effect lasts): any time after.
            if d["alert"] in l.get("may_fire", []) and onset <= ts(d["starts_at"]):
                return l, onset
        return None, None

    def early(d):
        for l in by_customer.get(d["customer_id"], []):
            if d["alert"] in LEADING and l["churn_at"]:
                c = ts(l["churn_at"])
                if c - timedelta(days=EARLY_WARNING_DAYS) <= ts(d["starts_at"]) <= c:
                    return True
        return False

    worst = 1.0
    rows = []
    table = []
    for kind in KINDS:
        # An update (reasons changed; its time is not its starts_at) is not a new alert.
        fired = [a["data"] for a in alerts
                 if a["data"]["alert"] == kind and a["data"]["status"] == "firing"
                 and a["time"] == a["data"]["starts_at"]]
        matched = [(d, *match(d)) for d in fired]
        right = [d for d, l, _ in matched if l is not None or early(d)]
        wrong = [d for d, l, _ in matched if l is None and not early(d)]
        expected = [l for l in labels if kind in l["alerts"]]
        delay = {}
        for d, l, onset in matched:
            if l is not None and kind in l["alerts"]:
                key = (l["customer_id"], l["onset"])
                dd = (ts(d["starts_at"]) - onset).total_seconds() / 86400
                delay[key] = min(delay.get(key, dd), dd)
        found = len(delay)
        healthy = {d["customer_id"] for d in wrong if d["customer_id"] not in by_customer}
        p = len(right) / len(fired) if fired else 1.0
        r = found / len(expected) if expected else 1.0
        worst = min(worst, p, r)
        ds = list(delay.values())
        rows.append(healthy)
        table.append((kind, p, r, len(healthy), pct(ds, 0.5), pct(ds, 0.9)))
        out(f"{kind:20} fired {len(fired):4} right {len(right):4} precision {p:.3f} | "
              f"expected {len(expected):4} found {found:4} recall {r:.3f} | healthy alerted {len(healthy):3} | "
              f"delay median {pct(ds, 0.5):5.1f} p90 {pct(ds, 0.9):5.1f} d")
        for d in wrong[:show_fp]:
            ls = by_customer.get(d["customer_id"], [])
            out(f"    wrong: {d['customer_id']} {d['starts_at']} [{','.join(l['story'] for l in ls) or 'healthy'}] {d['summary']}")
    any_healthy = set().union(*rows)
    out(f"healthy customers with any wrong alert: {len(any_healthy)}")
    out(f"worst {worst:.3f}")
    return table, len(any_healthy)


def per_seed_table(runs):
    """`table NAME=alerts.jsonl,labels.jsonl ...`: one markdown row per alert
    and run (precision, recall, healthy customers alerted, median and p90
    detection delay in days), then each run's healthy customers with any
    wrong alert."""
    print("| alert | run | precision | recall | healthy alerted | delay median | delay p90 |")
    print("|---|---|---|---|---|---|---|")
    results = []
    for run in runs:
        name, files = run.split("=", 1)
        a, l = files.split(",")
        results.append((name, *precision_recall(load(a), load(l), 0, out=lambda *_: None)))
    for i, kind in enumerate(KINDS):
        for name, table, _ in results:
            _, p, r, h, med, p90 = table[i]
            print(f"| {kind} | {name} | {p:.3f} | {r:.3f} | {h} | {med:.1f} | {p90:.1f} |")
    for name, _, any_healthy in results:
        print(f"{name}: healthy customers with any wrong alert: {any_healthy}")


def retail_auc(events_path, customers, t, horizon_days=90):
    """`retail g.jsonl c.jsonl T`: on a purchase log (`generate --profile
    retail`, backtest --until T --customers-out c.jsonl), "churned" = no
    event in (T, T + 90 d]; AUC of 100 - health against days since the last
    event alone and event count alone, on the same customers (as
    tests/eval.rs does)."""
    last, count, later = {}, defaultdict(int), set()
    with open(events_path) as f:
        for line in f:
            e = json.loads(line)
            at, cid = ts(e["ts"]), e["customer_id"]
            if at < t:
                last[cid] = max(last.get(cid, at), at)
                count[cid] += 1
            elif at < t + timedelta(days=horizon_days):
                later.add(cid)
    scores = {"health": ([], []), "recency": ([], []), "frequency": ([], [])}
    for row in customers:
        cid = row["customer_id"]
        if cid not in last:
            continue
        side = 0 if cid in later else 1
        scores["health"][side].append(100 - row["health_score"])
        scores["recency"][side].append((t - last[cid]).total_seconds())
        scores["frequency"][side].append(-count[cid])
    churners, retained = len(scores["health"][1]), len(scores["health"][0])
    print(" ".join(f"{k} {auc(v[1], v[0]):.3f}" for k, v in scores.items())
          + f" over {churners} churners and {retained} retained")


def main(argv):
    if len(argv) >= 5 and argv[1] == "auc":
        health_auc(load(argv[2]), load(argv[3]), ts(argv[4]), "--by-story" in argv[5:])
    elif len(argv) >= 5 and argv[1] == "retail":
        retail_auc(argv[2], load(argv[3]), ts(argv[4]))
    elif len(argv) >= 3 and argv[1] == "table":
        per_seed_table(argv[2:])
    elif len(argv) >= 4 and argv[1] == "pr":
        show = int(argv[4]) if len(argv) > 4 else 0
        precision_recall(load(argv[2]), load(argv[3]), show)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
