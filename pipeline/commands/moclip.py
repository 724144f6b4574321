"""Commands of the MoCLIP student: distil it, export its motion embeddings, and the linear probe
that compares them with CLIP's; and the frozen CLIP on flow images (the flow_clip stream)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from . import (DATASET_FILES, DEVICE, SUMMARY, arg, command, dataset_info, mark_summary,
               optional_int, params)

log = logging.getLogger("pipeline")


@command("moclip-train", "distil the motion student from cached flow and CLIP features (resumes "
         "from its last epoch checkpoint)",
         *(arg(f"--{name}", nargs="+", required=True, help="feature shards")
           for name in ("clip-train", "flow-train")),
         *(arg(f"--{name}", nargs="*", help="validation shards (best-epoch selection)")
           for name in ("clip-val", "flow-val")),
         *DATASET_FILES,
         arg("--params", required=True, help='JSON {"moclip": {...}, "clip": {...}}'),
         arg("--num-workers", type=optional_int, help="DataLoader workers (moclip.num_workers)"),
         arg("--out", required=True, help="output folder (student.pt, train_log.csv/png)"),
         SUMMARY, DEVICE)
def cmd_moclip_train(a):
    from ..compute import pick_device
    from ..runtime import with_runtime
    mark_summary(a, "the motion student is being trained again: motion rows are from the "
                    "previous student")
    from ..moclip.train import open_data, train_student
    given = json.loads(a.params)
    cfg = with_runtime("moclip", given.get("moclip", {}), {"num_workers": a.num_workers})
    clip = params(given.get("clip"), "clip")
    samples, n_classes, multilabel = dataset_info(a)
    data = open_data(a.clip_train, a.flow_train, a.clip_val or [], a.flow_val or [], samples,
                     n_classes, multilabel, clip)
    log.info("moclip: %d training and %d validation videos, %d classes (%s)",
             len(data["train_videos"]), len(data["val_videos"]), n_classes,
             "multi-label" if multilabel else "single-label")
    result = train_student(data, cfg, clip, a.out, pick_device(a.device))
    log.info("moclip: best epoch %d -> %s/student.pt", result["best_epoch"], a.out)


@command("moclip-export", "per-frame motion embeddings of one flow shard",
         arg("--student", required=True, help="student.pt (models/moclip or models/flow_clip)"),
         arg("--flow", required=True, help="flow shard"),
         arg("--out", required=True, help="motion shard to write"),
         arg("--params", help="the moclip: config section as JSON"),
         DEVICE)
def cmd_moclip_export(a):
    from ..compute import pick_device
    from ..moclip.export import export_motion
    cfg = params(a.params, "moclip")
    info = export_motion(a.student, a.flow, a.out, pick_device(a.device),
                         after_adapter=cfg["export"] == "after_adapter")
    log.info("moclip export: %d videos, %d rows -> %s", info["videos"], info["rows"], a.out)


@command("flow-clip-model", "the frozen CLIP as an untrained student (its image tower on the "
         "flow images): what moclip-export turns into the flow_clip stream, AnimalMotionCLIP's "
         "flow input",
         arg("--flow", required=True, help="a flow shard (its settings are recorded)"),
         arg("--clip", required=True, help="the clip: config section as JSON"),
         arg("--params", help="the moclip: config section as JSON (flow_norm)"),
         arg("--out", required=True, help="models/flow_clip/model.pt"))
def cmd_flow_clip_model(a):
    from ..moclip.export import save_flow_clip
    meta = save_flow_clip(params(a.clip, "clip"), params(a.params, "moclip"), a.flow, a.out)
    log.info("flow_clip: frozen %s on flow images (%s normalisation) -> %s", meta["clip_model"],
             meta["config"]["flow_norm"], a.out)


@command("moclip-linear-probe", "linear probe: how well time-pooled motion and CLIP embeddings "
         "each classify the actions",
         *(arg(f"--{name}", nargs="+", required=True)
           for name in ("clip-train", "motion-train", "clip-eval", "motion-eval")),
         *DATASET_FILES,
         arg("--out", required=True, help="models/moclip/linear_probe.json"))
def cmd_moclip_linear_probe(a):
    from ..moclip.export import linear_probe_report
    samples, n_classes, multilabel = dataset_info(a)
    result = linear_probe_report(a.clip_train, a.clip_eval, a.motion_train, a.motion_eval, samples,
                                 n_classes, multilabel)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    if result.get("no_metrics"):
        return
    log.info("linear probe on time-pooled embeddings (%s, %d train / %d eval videos): "
             "CLIP frames %.3f, MoCLIP motion %.3f", result["metric"], result["n_train"],
             result["n_eval"], result["clip"], result["motion"])
