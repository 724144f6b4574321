# Stage group "features": frozen CLIP frame embeddings, optical flow, class text embeddings.
# clip and flow run per shard and ask for a GPU (resources.gpu), which a cluster profile maps.


rule clip:
    input:
        probe=f"{RESULTS}/probe/{{split}}/shard-{{shard}}.tsv",
    output:
        f"{RESULTS}/features/clip/{{split}}/shard-{{shard}}.h5",
    params:
        clip=as_json("clip"),
        sampling=as_json("sampling"),
        device=config["device"],
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
        "python -m pipeline clip --probe {input.probe} --out {output} --device {params.device}"
        " --params {params.clip:q} --sampling {params.sampling:q} 2> {log}"


rule flow:
    input:
        probe=f"{RESULTS}/probe/{{split}}/shard-{{shard}}.tsv",
    output:
        f"{RESULTS}/features/flow/{{split}}/shard-{{shard}}.h5",
    params:
        flow=as_json("flow"),
        sampling=as_json("sampling"),
        device=config["device"],
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
        "python -m pipeline flow --probe {input.probe} --out {output} --device {params.device}"
        " --params {params.flow:q} --sampling {params.sampling:q} 2> {log}"


rule text:
    input:
        classes=rules.samples.output.classes,
        descriptions=[config["text"][k] for k in ("descriptions", "species_descriptions")
                      if config["text"].get(k)],
    output:
        f"{RESULTS}/features/text.h5",
    params:
        cfg=lambda w: json.dumps({"text": config["text"], "clip": config["clip"]}, sort_keys=True),
        species=f"--species {RESULTS}/species.tsv --relation {RESULTS}/relation.tsv"
        if (DS.get("species") or {}).get("names")
        else "",
        device=config["device"],
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
        "python -m pipeline text --classes {input.classes} {params.species} --out {output}"
        " --device {params.device} --params {params.cfg:q} 2> {log}"


rule features:
    input:
        per_shard(f"{RESULTS}/features/clip/{{split}}/shard-{{shard}}.h5"),
        per_shard(f"{RESULTS}/features/flow/{{split}}/shard-{{shard}}.h5"),
        f"{RESULTS}/features/text.h5",
