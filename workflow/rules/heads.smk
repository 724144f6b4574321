# Stage group "heads": one job per head named in config (heads:), then the report.

rule head:
    input:
        unpack(head_inputs),
        samples=rules.samples.output.samples,
        classes=rules.samples.output.classes,
        info=rules.samples.output.info,
    output:
        model=f"{HEADS_DIR}/{{head}}/head.pt",
        log=f"{HEADS_DIR}/{{head}}/train_log.csv",
        metrics=f"{HEADS_DIR}/{{head}}/metrics.json",
        predictions=f"{HEADS_DIR}/{{head}}/predictions/{EVAL}.csv",
        ap=report(f"{HEADS_DIR}/{{head}}/per_class_ap.png", category="Heads", subcategory="{head}",
                  caption="../report/per_class_ap.rst"),
        pr=report(f"{HEADS_DIR}/{{head}}/pr_curves.png", category="Heads", subcategory="{head}",
                  caption="../report/pr_curves.rst"),
        training=report(f"{HEADS_DIR}/{{head}}/training.png", category="Heads",
                        subcategory="{head}", caption="../report/training.rst"),
    wildcard_constraints:
        head="|".join(HEAD_NAMES),
    params:
        head=lambda w: json.dumps(config["heads"].get(w.head, {}), sort_keys=True),
        shards=head_args,
        splits=f"--train-split {TRAIN} --val-split {VAL} --eval-split {EVAL}",
        out=lambda w, output: str(Path(output.model).parent),
        device=config["device"],
    resources:
        gpu=gpus(),
        mem_mb=mem_mb("head"),
        runtime=runtime("head"),
    conda:
        ENV
    log:
        f"{LOGS}/heads/{{head}}.log",
    benchmark:
        f"{BENCH}/heads/{{head}}.tsv"
    shell:
        "python -m pipeline head --name {wildcards.head} --params {params.head:q} {params.shards}"
        " {params.splits} --samples {input.samples} --classes {input.classes}"
        " --dataset-info {input.info} --out {params.out} --device {params.device} 2> {log}"


rule report:
    input:
        metrics=expand(f"{HEADS_DIR}/{{head}}/metrics.json", head=HEAD_NAMES),
        probe=f"{MOCLIP}/probe.json",
        info=rules.samples.output.info,
    output:
        summary=report(f"{RESULTS}/reports/summary.md", category="Summary",
                       caption="../report/summary.rst"),
        plot=report(f"{RESULTS}/reports/heads.png", category="Summary",
                    caption="../report/heads.rst"),
    params:
        out=lambda w, output: str(Path(output.summary).parent),
    resources:
        gpu=0,
        mem_mb=mem_mb("report"),
        runtime=runtime("report"),
    conda:
        ENV
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    shell:
        "python -m pipeline report --metrics {input.metrics} --probe {input.probe}"
        " --dataset-info {input.info} --out {params.out} > {log} 2>&1"
