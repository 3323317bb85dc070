//! Baseline for the pipeline benchmark: the same SQL statements the stores issue for
//! one validation (record, confirm and enqueue, claim, complete), sent straight to a
//! pool with no trait, no domain parsing and no pipeline. The benchmark runs both side
//! by side; the ratio is the cost of everything above the database.
