# Stage group "cache": the bookkeeping that keeps extracted rows safe (pipeline/cache/reuse.py).
# A finished run plans neither rule.


# A shard that cannot be current (freshness.stale_outputs) gets a new marker input
# (force_if_stale): the marker is new, so the shard's job runs again.
rule stale:
    output:
        f"{RESULTS}/.stale/{{path}}.{{tag}}.why",
    wildcard_constraints:
        tag="[0-9a-f]{16}",
    localrule: True
    log:
        f"{LOGS}/stale/{{path}}.{{tag}}.log",
    run:
        # no params: a params value is a rerun trigger, and the reason differs from run to run
        Path(output[0]).write_text(STALE.get(f"{RESULTS}/{wildcards.path}", "cannot be current") + "\n")


# Shards outside the plan set aside, and the rows of every current shard in the cache (a cache
# deleted or copied without its links): onstart does it before any job; this rule, asked for by
# `all` only when there is such work, does it when the run has nothing else to do. Its output
# is a record named by when it was asked for, so the work is planned whenever it is there to do.
rule cache_adopt:
    output:
        f"{LOGS}/cache_adopt/{{stamp}}.txt",
    params:
        results=lambda w, output: str(Path(output[0]).parents[2]),  # results/<name>
        set_aside=json.dumps(OUT_OF_PLAN),
        cache=CACHE,
    localrule: True
    conda:
        ENV
    log:
        f"{LOGS}/cache_adopt/{{stamp}}.log",
    shell:
        "python -m pipeline cache-adopt --results {params.results:q} --cache {params.cache:q}"
        " --set-aside {params.set_aside:q} --out {output:q} 2> {log:q}"


# What `all` and `features` ask of it: a record of this run's adoption, only when there is work
ADOPT = [f"{LOGS}/cache_adopt/{time.strftime('%Y%m%dT%H%M%S')}.txt"] if OUT_OF_PLAN or CACHE_GAPS else []
