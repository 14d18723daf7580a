"""Side-by-side benchmarks of TEAM and its peers (suites, resume) and exact optima as anchors.

    from teamattack.bench import run_bench, get_suite, run_record, markdown_table
    specs, targeted = get_suite("untargeted-l2")
    out = run_bench(model, x, y, specs, targeted=targeted, seed=0, batch_size=100)
    print(markdown_table(out["runs"]))

See docs/bench.md.
"""
from .harness import (
    ResumeMismatch,
    Sidecar,
    bench_document,
    derive_seed,
    load_images,
    render,
    run_bench,
    select_images,
)
from .records import (
    example_arrays,
    markdown_table,
    per_image_best,
    record_from_arrays,
    run_record,
    targeted_cases,
)
from .suites import SUITES, AttackSpec, SuiteError, get_suite, peer_spec, team_spec

__all__ = [
    "SUITES", "AttackSpec", "ResumeMismatch", "Sidecar", "SuiteError", "bench_document", "derive_seed",
    "example_arrays", "get_suite", "load_images", "markdown_table", "peer_spec", "per_image_best",
    "record_from_arrays", "render", "run_bench", "run_record", "select_images", "targeted_cases", "team_spec",
]
