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


def precision_recall(alerts, labels):
    by_customer = defaultdict(list)
    for l in labels:
        by_customer[l["customer_id"]].append(l)

    def hit(d):
        for l in by_customer.get(d["customer_id"], []):
            onset = ts(l["churn_at"]) if d["alert"] == "churned" and l["churn_at"] else ts(l["onset"])
            if d["alert"] in l["alerts"] and onset <= ts(d["starts_at"]) <= onset + timedelta(days=14):
                return True
        return False

    worst = 1.0
    for kind in KINDS:
        fired = [a["data"] for a in alerts
                 if a["data"]["alert"] == kind and a["data"]["status"] == "firing"]
        hits = [d for d in fired if hit(d)]
        expected = [l for l in labels if kind in l["alerts"]]
        found_ids = {d["customer_id"] for d in hits}
        found = sum(1 for l in expected if l["customer_id"] in found_ids)
        p = len(hits) / len(fired) if fired else 1.0
        r = found / len(expected) if expected else 1.0
        worst = min(worst, p, r)
        print(f"{kind:20} fired {len(fired):4} tp {len(hits):4} precision {p:.3f} | "
              f"expected {len(expected):4} found {found:4} recall {r:.3f}")
    print(f"worst {worst:.3f}")


def main(argv):
    if len(argv) >= 5 and argv[1] == "auc":
        health_auc(load(argv[2]), load(argv[3]), ts(argv[4]), "--by-story" in argv[5:])
    elif len(argv) == 4 and argv[1] == "pr":
        precision_recall(load(argv[2]), load(argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
