# Stage group "data": demo data set, sample tables, probing.

if DS["format"] == "demo":

    rule demo_data:
        output:
            annotations=DS["annotations"],
            classes=DS["classes"],
            descriptions=str(Path(DS["annotations"]).parent / "descriptions.yaml"),
            species=str(Path(DS["annotations"]).parent / "species.csv"),
            relation=str(Path(DS["annotations"]).parent / "relation.tsv"),
            species_descriptions=str(Path(DS["annotations"]).parent / "species_descriptions.yaml"),
            videos=directory(DS["videos"]),
        params:
            demo=section_params(config, "demo"),
            out=lambda w, output: str(Path(output.annotations).parent),
        threads: job_threads("demo_data")
        resources:
            gpu=0,
            mem_mb=mem_mb("demo_data"),
            runtime=runtime("demo_data"),
        conda:
            ENV
        log:
            f"{LOGS}/demo_data.log",
        benchmark:
            f"{BENCH}/demo_data.tsv"
        shell:
            "PIPELINE_THREADS={threads} python -m pipeline demo --out {params.out:q} --params {params.demo:q} 2> {log:q}"


    rule demo_clip:
        output:
            str(Path(DS["annotations"]).parent / "demo_clip.pt"),
        threads: 2  # the training uses 2 threads whatever it gets (same weights everywhere)
        params:
            demo=section_params(config, "demo"),
        resources:
            gpu=0,
            mem_mb=mem_mb("demo_clip"),
            runtime=runtime("demo_clip"),
        conda:
            ENV
        log:
            f"{LOGS}/demo_clip.log",
        benchmark:
            f"{BENCH}/demo_clip.tsv"
        shell:
            "PIPELINE_THREADS={threads} python -m pipeline demo-clip --out {output:q} --params {params.demo:q} 2> {log:q}"


SPECIES_FILES = bool((DS.get("species") or {}).get("names"))


# A checkpoint: the probe jobs read their shard's members from samples.tsv once it is made, so a
# probe shard re-runs when its videos change (params: members), never for a label.
checkpoint samples:
    input:
        annotation_inputs(),
    output:
        samples=RUN.samples,
        classes=RUN.classes,
        missing=f"{RESULTS}/missing.tsv",
        info=f"{RESULTS}/dataset.json",
        species=[f"{RESULTS}/species.tsv", f"{RESULTS}/relation.tsv"] if SPECIES_FILES else [],
    params:
        # the split roles (train/val/eval) are the heads' business: changing them re-reads nothing
        dataset=section_params(config, "dataset", drop=("train_split", "val_split", "eval_split")),
        shards=config["shards"],
        out=lambda w, output: str(Path(output.samples).parent),
    threads: job_threads("samples")
    resources:
        gpu=0,
        mem_mb=mem_mb("samples"),
        runtime=runtime("samples"),
    conda:
        ENV
    log:
        f"{LOGS}/samples.log",
    benchmark:
        f"{BENCH}/samples.tsv"
    shell:
        "PIPELINE_THREADS={threads} python -m pipeline samples --params {params.dataset:q} --shards {params.shards}"
        " --out {params.out:q} 2> {log:q}"


# A checkpoint too: an extraction shard re-runs when its probe table's content changes
# (params: content), not when the table is written again with the same content.
checkpoint probe:
    input:
        samples=samples_table,
    output:
        shard_pattern("probe"),
    params:
        sampling=section_params(config, "sampling"),
        videos=DS["videos"],
        members=shard_videos,
    threads: job_threads("probe")
    resources:
        gpu=0,
        mem_mb=mem_mb("probe"),
        runtime=runtime("probe"),
    conda:
        ENV
    log:
        f"{LOGS}/probe/{{split}}-{{shard}}.log",
    benchmark:
        f"{BENCH}/probe/{{split}}-{{shard}}.tsv"
    shell:
        "PIPELINE_THREADS={threads} python -m pipeline probe --samples {input.samples:q} --videos {params.videos:q}"
        " --split {wildcards.split:q} --shard {wildcards.shard} --params {params.sampling:q}"
        " --out {output:q} 2> {log:q}"
