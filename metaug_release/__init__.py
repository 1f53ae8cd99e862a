"""Release and record tooling: what turns measurements into the repository's records.

A package of the source checkout, not of the wheel (pyproject.toml does not install it): it writes
into the checkout it runs from (:mod:`.paths`). Run it from the repository root as
``python -m metaug_release`` (:mod:`.cli`; ``-m`` puts the current folder on ``sys.path``).
Each module has one job; each subcommand calls one function of one module:

- :mod:`.sections`         the one writer of generated sections (``<!-- name:start -->`` markers)
- :mod:`.paths`            where the records live in a checkout
- :mod:`.encoder_eval`     evaluate an encoder on CIFAR-10 (k-NN, fast probe, k-means) -> a
                           ``metaug-eval`` report covering ``conv`` and ``fc``
- :mod:`.records`          read such reports back (per-layer numbers for tables and cards)
- :mod:`.run_log`          training time and budget from a run's ``log.jsonl``
- :mod:`.cards`            card-metrics files of the first release; re-render shipped cards
- :mod:`.campaign`         the CPU training campaign's rows, table and plot
- :mod:`.campaign_cards`   the campaign release's cards and RESULTS.md summary
- :mod:`.meta_diagnostics_card`  the cards' section on what the meta diagnostics say about the MAGs
- :mod:`.campaign_final`   the last leg: paper-probe row and RESULTS.md's final table
- :mod:`.readme`           the README's "Released models" section (every shipped pair)
- :mod:`.reproduce`        re-measure a released folder's card k-NN claims
- :mod:`.study`            the recipe study (#34): rows, table, plot
- :mod:`.view_generators`  the IDAA / A2 comparison table (#6)
- :mod:`.view_generator_budget`  the epoch budget of a comparison run, from its probe rows' speed
- :mod:`.release_record`   the re-release decision (beats the current release?) and
                           ``benchmarks/current_release.json``

Every number written comes from committed files (evaluation reports, run logs, recipes); the
tooling never types a result in.
"""
