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
        scores=f"{HEADS_DIR}/{{head}}/scores.npz",
        val_predictions=[f"{HEADS_DIR}/{{head}}/predictions/{VAL}.csv"] if VAL and VAL != EVAL else [],
        ap=report(f"{HEADS_DIR}/{{head}}/per_class_ap.png", category="Heads", subcategory="{head}",
                  caption="../report/per_class_ap.rst"),
        pr=report(f"{HEADS_DIR}/{{head}}/pr_curves.png", category="Heads", subcategory="{head}",
                  caption="../report/pr_curves.rst"),
        training=report(f"{HEADS_DIR}/{{head}}/training.png", category="Heads",
                        subcategory="{head}", caption="../report/training.rst"),
    wildcard_constraints:
        head="|".join(map(re.escape, HEAD_NAMES)),
    params:
        head=lambda w: head_recipe(HEADS[w.head]),
        shards=head_args,
        splits=" ".join(f"--{role}-split {shlex.quote(split)}" for role, split in
                        (("train", TRAIN), ("val", VAL), ("eval", EVAL)) if split),
        out=lambda w, output: str(Path(output.model).parent),
        summary=SUMMARY,
    threads: job_threads("head")
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
        "PIPELINE_THREADS={threads} python -m pipeline head --name {wildcards.head} --params {params.head:q} {params.shards}"
        " {params.splits} --samples {input.samples:q} --classes {input.classes:q}"
        " --dataset-info {input.info:q} --out {params.out:q} --summary {params.summary:q} 2> {log:q}"


rule report:
    input:
        force_if_stale(path=SUMMARY),
        unpack(lambda w: {"linear_probe": f"{MOCLIP}/linear_probe.json"} if USES_STUDENT else {}),
        metrics=expand(f"{HEADS_DIR}/{{head}}/metrics.json", head=HEAD_NAMES),
        scores=expand(f"{HEADS_DIR}/{{head}}/scores.npz", head=HEAD_NAMES),
        samples=rules.samples.output.samples,
        classes=rules.samples.output.classes,
        info=rules.samples.output.info,
        missing=rules.samples.output.missing,
        probe_tables=split_shards("probe", EVAL),
        features=split_shards("clip", EVAL) + split_shards("flow", EVAL),
    output:
        summary=report(SUMMARY, category="Summary",
                       caption="../report/summary.rst"),
        plot=report(f"{RESULTS}/reports/heads.png", category="Summary",
                    caption="../report/heads.rst"),
        per_class=report(f"{RESULTS}/reports/per_class.png", category="Where motion helps",
                         caption="../report/per_class.rst"),
        per_class_csv=report(f"{RESULTS}/reports/per_class.csv", category="Where motion helps",
                             caption="../report/per_class.rst"),
        confusion=report(f"{RESULTS}/reports/confusion.png", category="Where motion helps",
                         caption="../report/confusion.rst"),
        worst=report(f"{RESULTS}/reports/worst_videos.csv", category="Where motion helps",
                     caption="../report/worst_videos.rst"),
        experiments=f"{RESULTS}/reports/experiments.csv",
        agreement=report(f"{RESULTS}/reports/agreement.png", category="Where motion helps",
                         caption="../report/agreement.rst"),
    params:
        out=lambda w, output: str(Path(output.summary).parent),
        linear_probe=lambda w, input: (f"--linear-probe {shlex.quote(input.linear_probe)}"
                                       if "linear_probe" in input.keys() else ""),
        # a function: the protocol's text templates hold braces ({action}), no wildcards
        analysis=lambda w: " ".join(f"--{k} {shlex.quote(v)}" for k, v in (
            ("train-split", TRAIN), ("videos-root", DS["videos"]), ("run", RESULTS),
            ("protocol", json.dumps(run_view(config), sort_keys=True)),
            # relative: a project copied or moved keeps its report's params
            ("presets", os.path.relpath(Path(workflow.basedir) / "configs")))),
    threads: job_threads("report")
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
        "PIPELINE_THREADS={threads} python -m pipeline report --metrics {input.metrics:q} {params.linear_probe}"
        " --dataset-info {input.info:q} --missing {input.missing:q} --probe-tables {input.probe_tables:q}"
        " --features {input.features:q} --scores {input.scores:q} --samples {input.samples:q}"
        " --classes {input.classes:q} {params.analysis} --out {params.out:q} > {log:q} 2>&1"
