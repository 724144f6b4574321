# Stage group "features": frozen CLIP frame embeddings, optical flow, class text embeddings.
# clip and flow run per shard and ask for a GPU (resources.gpu), which a cluster profile maps;
# with `extraction: fused` (the default) one job per shard decodes each video once for both.


# Both ways of making the clip and flow shards are rules; `extraction` says which one
# Snakemake picks.
# The shell lines keep `PIPELINE_THREADS={threads}` (Snakemake also exports OMP_NUM_THREADS):
# a rule's shell text is its "code" rerun trigger, so editing it would re-run every finished
# job of every existing run.
if config["extraction"] == "fused":

    ruleorder: extract > clip
    ruleorder: extract > flow

else:

    ruleorder: clip > extract
    ruleorder: flow > extract


rule extract:
    input:
        force_if_stale("clip", "flow"),
        probe=probe_table,
        weights=CLIP_WEIGHTS,
    output:
        clip=shard_pattern("clip"),
        flow=shard_pattern("flow"),
    params:
        clip=row_params(config, "clip", "clip"),
        flow=row_params(config, "flow", "flow"),
        sampling=row_params(config, "clip", "sampling"),
        videos=probe_content,
        reuse=PARAMS_BEFORE_CACHE,
    threads: job_threads("extract", "clip", "flow")
    resources:
        gpu=gpus(),
        mem_mb=mem_mb("extract", "clip", "flow"),
        runtime=runtime("extract", "clip", "flow"),
    conda:
        ENV
    log:
        f"{LOGS}/extract/{{split}}-{{shard}}.log",
    benchmark:
        f"{BENCH}/extract/{{split}}-{{shard}}.tsv"
    shell:
        "PIPELINE_THREADS={threads} python -m pipeline extract --probe {input.probe:q} --clip-out {output.clip:q}"
        " --flow-out {output.flow:q} --clip {params.clip:q} --flow {params.flow:q}"
        " --sampling {params.sampling:q} --reuse {params.reuse:q} 2> {log:q}"


rule clip:
    input:
        force_if_stale("clip"),
        probe=probe_table,
        weights=CLIP_WEIGHTS,
    output:
        shard_pattern("clip"),
    params:
        clip=row_params(config, "clip", "clip"),
        sampling=row_params(config, "clip", "sampling"),
        videos=probe_content,
        reuse=PARAMS_BEFORE_CACHE,
    threads: job_threads("clip")
    resources:
        gpu=gpus(),
        mem_mb=mem_mb("clip"),
        runtime=runtime("clip"),
    conda:
        ENV
    log:
        f"{LOGS}/clip/{{split}}-{{shard}}.log",
    benchmark:
        f"{BENCH}/clip/{{split}}-{{shard}}.tsv"
    shell:
        "PIPELINE_THREADS={threads} python -m pipeline clip --probe {input.probe:q} --out {output:q}"
        " --params {params.clip:q} --sampling {params.sampling:q} --reuse {params.reuse:q}"
        " 2> {log:q}"


rule flow:
    input:
        force_if_stale("flow"),
        probe=probe_table,
    output:
        shard_pattern("flow"),
    params:
        flow=row_params(config, "flow", "flow"),
        sampling=row_params(config, "flow", "sampling"),
        videos=probe_content,
        reuse=PARAMS_BEFORE_CACHE,
    threads: job_threads("flow")
    resources:
        gpu=gpus(config["flow"]["backend"] == "ptlflow"),
        mem_mb=mem_mb("flow"),
        runtime=runtime("flow"),
    conda:
        ENV
    log:
        f"{LOGS}/flow/{{split}}-{{shard}}.log",
    benchmark:
        f"{BENCH}/flow/{{split}}-{{shard}}.tsv"
    shell:
        "PIPELINE_THREADS={threads} python -m pipeline flow --probe {input.probe:q} --out {output:q}"
        " --params {params.flow:q} --sampling {params.sampling:q} --reuse {params.reuse:q}"
        " 2> {log:q}"


rule text:
    input:
        classes=rules.samples.output.classes,
        species=rules.samples.output.species,
        weights=CLIP_WEIGHTS,
        descriptions=[config["text"][k] for k in ("descriptions", "species_descriptions")
                      if config["text"].get(k)],
    output:
        RUN.text_bank,
    params:
        text=lambda w: section_params(config, "text", kind="text"),  # a function: its {action} is no wildcard
        clip=section_params(config, "clip", keys=CLIP_IDENTITY),
    threads: job_threads("text")
    resources:
        gpu=0,
        mem_mb=mem_mb("text"),
        runtime=runtime("text"),
    conda:
        ENV
    log:
        f"{LOGS}/text.log",
    benchmark:
        f"{BENCH}/text.tsv"
    shell:
        "PIPELINE_THREADS={threads} python -m pipeline text --classes {input.classes:q} --species {input.species:q}"
        " --out {output:q} --text {params.text:q} --clip {params.clip:q}"
        " 2> {log:q}"


rule features:
    input:
        ADOPT,
        per_shard("clip"),
        per_shard("flow"),
        RUN.text_bank,
