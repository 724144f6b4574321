# Stage group "moclip": distil the motion student, export motion embeddings, probe them.


rule moclip_train:
    input:
        clip_train=split_shards("clip", TRAIN),
        flow_train=split_shards("flow", TRAIN),
        clip_val=split_shards("clip", VAL) if VAL else [],
        flow_val=split_shards("flow", VAL) if VAL else [],
        samples=rules.samples.output.samples,
        classes=rules.samples.output.classes,
        info=rules.samples.output.info,
    output:
        student=f"{MOCLIP}/student.pt",
        log=f"{MOCLIP}/train_log.csv",
        plot=report(f"{MOCLIP}/train_log.png", category="MoCLIP"),
    params:
        cfg=lambda w: json.dumps({"moclip": config["moclip"], "clip": config["clip"]}, sort_keys=True),
        val=lambda w, input: ("--clip-val " + " ".join(input.clip_val) + " --flow-val "
        + " ".join(input.flow_val)) if VAL else "",
        device=config["device"],
        out=lambda w, output: str(Path(output.student).parent),
    resources:
        gpu=gpus(),
        mem_mb=mem_mb("moclip_train"),
        runtime=runtime("moclip_train"),
    conda:
        ENV
    log:
        f"{LOGS}/moclip_train.log",
    benchmark:
        f"{BENCH}/moclip_train.tsv"
    shell:
        "python -m pipeline moclip-train --clip-train {input.clip_train} --flow-train {input.flow_train}"
        " {params.val} --samples {input.samples} --classes {input.classes}"
        " --dataset-info {input.info} --params {params.cfg:q} --out {params.out}"
        " --device {params.device} 2> {log}"


rule moclip_export:
    input:
        student=rules.moclip_train.output.student,
        flow=f"{RESULTS}/features/flow/{{split}}/shard-{{shard}}.h5",
    output:
        f"{RESULTS}/features/motion/{{split}}/shard-{{shard}}.h5",
    params:
        moclip=as_json("moclip"),
        device=config["device"],
    resources:
        gpu=gpus(),
        mem_mb=mem_mb("moclip_export"),
        runtime=runtime("moclip_export"),
    conda:
        ENV
    log:
        f"{LOGS}/moclip_export/{{split}}-{{shard}}.log",
    benchmark:
        f"{BENCH}/moclip_export/{{split}}-{{shard}}.tsv"
    shell:
        "python -m pipeline moclip-export --student {input.student} --flow {input.flow}"
        " --out {output} --params {params.moclip:q} --device {params.device} 2> {log}"


rule moclip_probe:
    input:
        clip_train=split_shards("clip", TRAIN),
        motion_train=split_shards("motion", TRAIN),
        clip_eval=split_shards("clip", DS["eval_split"]),
        motion_eval=split_shards("motion", DS["eval_split"]),
        samples=rules.samples.output.samples,
        classes=rules.samples.output.classes,
        info=rules.samples.output.info,
    output:
        f"{MOCLIP}/probe.json",
    resources:
        gpu=0,
        mem_mb=mem_mb("moclip_probe"),
        runtime=runtime("moclip_probe"),
    conda:
        ENV
    log:
        f"{LOGS}/moclip_probe.log",
    benchmark:
        f"{BENCH}/moclip_probe.tsv"
    shell:
        "python -m pipeline moclip-probe --clip-train {input.clip_train}"
        " --motion-train {input.motion_train} --clip-eval {input.clip_eval}"
        " --motion-eval {input.motion_eval} --samples {input.samples} --classes {input.classes}"
        " --dataset-info {input.info} --out {output} 2> {log}"


rule motion:
    input:
        per_shard(f"{RESULTS}/features/motion/{{split}}/shard-{{shard}}.h5"),
        f"{MOCLIP}/probe.json",
