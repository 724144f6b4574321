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
        weights=CLIP_WEIGHTS,
    output:
        student=f"{MOCLIP}/student.pt",
        log=f"{MOCLIP}/train_log.csv",
        plot=report(f"{MOCLIP}/train_log.png", category="MoCLIP"),
    params:
        cfg=student_params(config),
        out=lambda w, output: str(Path(output.student).parent),
        summary=SUMMARY,
    threads: job_threads("moclip_train")
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
        "PIPELINE_THREADS={threads} python -m pipeline moclip-train --clip-train {input.clip_train:q}"
        " --flow-train {input.flow_train:q} --clip-val {input.clip_val:q} --flow-val {input.flow_val:q}"
        " --samples {input.samples:q} --classes {input.classes:q} --dataset-info {input.info:q}"
        " --params {params.cfg:q} --out {params.out:q} --summary {params.summary:q}"
        " 2> {log:q}"


rule moclip_export:
    input:
        force_if_stale("motion"),
        student=rules.moclip_train.output.student,
        flow=shard_pattern("flow"),
    output:
        shard_pattern("motion"),
    params:
        moclip=section_params(config, "moclip", keys=("export",)),
        # the student's settings: changing them re-exports even when the re-training that
        # follows is killed and leaves no student.pt behind
        student=student_params(config),
    threads: job_threads("moclip_export")
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
        "PIPELINE_THREADS={threads} python -m pipeline moclip-export --student {input.student:q} --flow {input.flow:q}"
        " --out {output:q} --params {params.moclip:q} 2> {log:q}"


rule moclip_linear_probe:
    input:
        clip_train=split_shards("clip", TRAIN),
        motion_train=split_shards("motion", TRAIN),
        clip_eval=split_shards("clip", EVAL),
        motion_eval=split_shards("motion", EVAL),
        samples=rules.samples.output.samples,
        classes=rules.samples.output.classes,
        info=rules.samples.output.info,
    output:
        f"{MOCLIP}/linear_probe.json",
    threads: job_threads("moclip_linear_probe")
    resources:
        gpu=0,
        mem_mb=mem_mb("moclip_linear_probe"),
        runtime=runtime("moclip_linear_probe"),
    conda:
        ENV
    log:
        f"{LOGS}/moclip_linear_probe.log",
    benchmark:
        f"{BENCH}/moclip_linear_probe.tsv"
    shell:
        "PIPELINE_THREADS={threads} python -m pipeline moclip-linear-probe --clip-train {input.clip_train:q}"
        " --motion-train {input.motion_train:q} --clip-eval {input.clip_eval:q}"
        " --motion-eval {input.motion_eval:q} --samples {input.samples:q} --classes {input.classes:q}"
        " --dataset-info {input.info:q} --out {output:q} 2> {log:q}"


rule motion:
    input:
        per_shard("motion"),
        f"{MOCLIP}/linear_probe.json",


# AnimalMotionCLIP's flow input on cached flow: the frozen CLIP's embeddings of the flow images,
# for heads with motion_source: flow_clip (made only when one asks for them).
rule flow_clip_model:
    input:
        flow=shard_path(RESULTS, "flow", TRAIN, 0),
        weights=CLIP_WEIGHTS,
    output:
        f"{RESULTS}/models/flow_clip/model.pt",
    params:
        clip=section_params(config, "clip", keys=CLIP_IDENTITY),
        moclip=section_params(config, "moclip", keys=("flow_norm",)),
    threads: 1
    resources:
        gpu=0,
        mem_mb=mem_mb("flow_clip_model"),
        runtime=runtime("flow_clip_model"),
    conda:
        ENV
    log:
        f"{LOGS}/flow_clip_model.log",
    shell:
        "PIPELINE_THREADS={threads} python -m pipeline flow-clip-model --flow {input.flow:q} --clip {params.clip:q}"
        " --params {params.moclip:q} --out {output:q} 2> {log:q}"


rule flow_clip_export:
    input:
        force_if_stale("flow_clip"),
        student=rules.flow_clip_model.output[0],
        flow=shard_pattern("flow"),
    output:
        shard_pattern("flow_clip"),
    threads: job_threads("moclip_export")
    resources:
        gpu=gpus(),
        mem_mb=mem_mb("moclip_export"),
        runtime=runtime("moclip_export"),
    conda:
        ENV
    log:
        f"{LOGS}/flow_clip_export/{{split}}-{{shard}}.log",
    benchmark:
        f"{BENCH}/flow_clip_export/{{split}}-{{shard}}.tsv"
    shell:
        "PIPELINE_THREADS={threads} python -m pipeline moclip-export --student {input.student:q} --flow {input.flow:q}"
        " --out {output:q} 2> {log:q}"
