"""The demo's machine-readable result, ``report.json`` beside ``report.md`` (ROS-free; other tools read it).

Keys::

    versions        [{version, step, labels, validation, promoted, ap30, ap50, ap75}, ...]  every version,
                    oldest first; labels = training labels it saw; validation = the gate's scores on
                    held-out self-labels; promoted = it passed the gate (was served at some point);
                    ap* = AP on the held-out novel-object scenes (null where that version was not evaluated)
    served_version  the version served at the end (null: nothing passed the gate)
    served_ap50     its AP@0.5 on the held-out scenes (null if not evaluated or nothing served)
    bottom_up_ap50  the bottom-up baseline's AP@0.5 on the same scenes
    served_sequence [{version, ap50, event}] the served version after each promotion/rollback, in order
    max_served_ap50_drop  the largest fall of served AP@0.5 from one promotion to the next (0 if none)
    bottom_up_colour_ap50, bottom_up_depth_ap50  both bottom-up baselines (bottom_up_ap50 is the better one)
    served_with_depth_ap50  the served version's instances combined with the depth-aware segments
                    (core/evaluation/hypotheses.combine_with_depth; the robot's hypotheses), null if not evaluated;
                    versions[i].ap50_with_depth and max_served_with_depth_ap50_drop likewise
    eval_scenes, seed
    camera_moves    (runs with the camera-move phase) what it did: scenes, views, view_pairs, seconds and
                    the auxiliary tasks' steps on the shared backbone (camera_move_summary)
"""

from __future__ import annotations

from typing import Optional


def _max_drop(sequence: list[dict], key: str) -> float:
    drops = [a[key] - b[key] for a, b in zip(sequence, sequence[1:])
             if a[key] is not None and b[key] is not None and b["event"] == "promoted"]
    return max([0.0] + drops)


def build_report(versions: list[dict], evaluated: dict[int, dict], ledger_events: list[dict],
                 served_version: Optional[int], bottom_up: dict, *, eval_scenes: int, seed: int,
                 with_depth: Optional[dict[int, dict]] = None, baselines: Optional[dict[str, dict]] = None) -> dict:
    """``versions``: [{'version', 'meta'}], ``evaluated``: {version: {'AP30', 'AP50', 'AP75', ...}};
    ``with_depth``: the same for the versions combined with depth; ``baselines``: {'colour', 'depth'} metrics."""
    with_depth = with_depth or {}

    def depth_ap50(version: int) -> Optional[float]:
        return float(with_depth[version]["AP50"]) if version in with_depth else None

    promoted = {int(e["version"]) for e in ledger_events if e.get("event") == "promoted"}
    rows = []
    for v in versions:
        meta, version = v["meta"], int(v["version"])
        m = evaluated.get(version)
        rows.append({
            "version": version, "step": int(meta.get("step", 0)), "labels": int(meta.get("dataset_size") or 0),
            "validation": dict(meta.get("validation") or {}),
            "promoted": version in promoted or (not ledger_events and meta.get("promoted", True) is not False),
            "ap30": None if m is None else float(m["AP30"]), "ap50": None if m is None else float(m["AP50"]),
            "ap75": None if m is None else float(m["AP75"]), "ap50_with_depth": depth_ap50(version),
        })
    sequence = [{"version": int(e["version"]), "event": e.get("event", "promoted"),
                 "ap50": None if int(e["version"]) not in evaluated else float(evaluated[int(e["version"])]["AP50"]),
                 "ap50_with_depth": depth_ap50(int(e["version"]))}
                for e in ledger_events]
    served_ap50 = None
    if served_version is not None and served_version in evaluated:
        served_ap50 = float(evaluated[served_version]["AP50"])
    return {
        "versions": rows, "served_version": served_version, "served_ap50": served_ap50,
        "bottom_up_ap50": float(bottom_up["AP50"]), "served_sequence": sequence,
        "max_served_ap50_drop": _max_drop(sequence, "ap50"), "eval_scenes": int(eval_scenes), "seed": int(seed),
        "served_with_depth_ap50": None if served_version is None else depth_ap50(served_version),
        "max_served_with_depth_ap50_drop": _max_drop(sequence, "ap50_with_depth"),
        **{f"bottom_up_{name}_ap50": float(m["AP50"]) for name, m in (baselines or {}).items()},
    }


def versions_to_evaluate(all_versions: list[int], promoted: list[int], served: Optional[int],
                         max_spread: int = 5) -> list[int]:
    """Every promoted version and the served one, plus up to ``max_spread`` evenly spaced others (first, newest)."""
    if not all_versions:
        return []
    n = len(all_versions)
    spread = {all_versions[round(i * (n - 1) / max(max_spread - 1, 1))] for i in range(max_spread)}
    chosen = spread | set(promoted) | ({served} if served is not None else set())
    return sorted(v for v in chosen if v in set(all_versions))


def promotion_table(report: dict) -> str:
    """Text table of versions: validation score, gate decision, AP on the held-out scenes."""
    lines = [f"  {'version':>7s} {'step':>5s} {'labels':>6s} {'val score':>9s} {'gate':>9s} {'AP@0.5':>7s} "
             f"{'+depth':>7s}"]
    for r in report["versions"]:
        score = r["validation"].get("score")
        ap = "-" if r["ap50"] is None else f"{r['ap50']:.3f}"
        apd = "-" if r.get("ap50_with_depth") is None else f"{r['ap50_with_depth']:.3f}"
        lines.append(f"  {'v' + str(r['version']):>7s} {r['step']:5d} {r['labels']:6d} "
                     f"{'-' if score is None else format(score, '.3f'):>9s} "
                     f"{'promoted' if r['promoted'] else 'candidate':>9s} {ap:>7s} {apd:>7s}")
    served = report["served_version"]
    lines.append(f"  served at the end: {'nothing' if served is None else 'v' + str(served)}"
                 + ("" if report["served_ap50"] is None else f" (AP@0.5 {report['served_ap50']:.3f})")
                 + ("" if report.get("served_with_depth_ap50") is None
                    else f", with depth {report['served_with_depth_ap50']:.3f}")
                 + f"; bottom-up baseline AP@0.5 {report['bottom_up_ap50']:.3f}; largest served AP@0.5 drop "
                 f"between promotions {report['max_served_ap50_drop']:.3f}"
                 + ("" if report.get("served_with_depth_ap50") is None
                    else f" (with depth {report['max_served_with_depth_ap50_drop']:.3f})"))
    return "\n".join(lines)


def camera_move_summary(collections: list[dict], pair_dir, checkpoint_dir, auxiliary_tasks: list[str]) -> dict:
    """``report.json`` ``camera_moves``: what the camera-move phase did and what the trainer made of it.

    ``collections``: one record per scene the camera moved over ({'scene', 'views_added', 'seconds'}).
    Keys: scenes, views (registered), view_pairs (stored), seconds (the phase's wall time in all),
    auxiliary ({task: {versions, steps, pretraining_steps, view_pairs}}, from its newest checkpoint),
    instance_first_version and instance_first_version_backbone_steps (the oldest instance version on disk
    and the steps each task had taken on the shared backbone when it was saved; None without one).
    """
    from selfsup_perception.core.learning.serving import checkpoints as ckpt
    from selfsup_perception.core.registration.pair_store import PairStore

    store = PairStore(pair_dir)
    out = {"scenes": len(collections), "views": len(store.registered_view_ids()), "view_pairs": len(store),
           "seconds": float(sum(c.get("seconds", 0.0) for c in collections)), "auxiliary": {}}
    folders = {"descriptors": "descriptors", "region_consistency": "semantic_segmentation"}
    for name in auxiliary_tasks:
        versions = ckpt.list_versions(checkpoint_dir, folders[name])
        newest = versions[-1].meta if versions else {}
        out["auxiliary"][name] = {"versions": versions[-1].version if versions else 0,
                                  "steps": int(newest.get("step", 0)),
                                  "pretraining_steps": int(newest.get("pretraining_steps", 0)),
                                  "view_pairs": int(newest.get("view_pairs", 0))}
    instance = ckpt.list_versions(checkpoint_dir, "instance_segmentation")
    shared = instance[0].meta.get("shared_backbone") if instance else None
    out["instance_first_version"] = instance[0].version if instance else None
    out["instance_first_version_backbone_steps"] = dict(shared["steps"]) if shared else None
    return out


def camera_move_text(summary: dict) -> str:
    lines = [f"  scenes the camera moved over   {summary['scenes']} ({summary['seconds']:.0f} s in all)",
             f"  views registered / view pairs  {summary['views']} / {summary['view_pairs']}"]
    for name, a in summary["auxiliary"].items():
        lines.append(f"  {name:30s} {a['steps']} steps on the shared backbone ({a['pretraining_steps']} before "
                     f"enough labels existed), {a['versions']} versions, {a['view_pairs']} view pairs")
    if summary.get("instance_first_version_backbone_steps"):
        lines.append(f"  first instance version on disk (v{summary['instance_first_version']}): backbone steps "
                     f"{summary['instance_first_version_backbone_steps']}")
    return "\n".join(lines)
