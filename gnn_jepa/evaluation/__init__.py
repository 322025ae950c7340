"""Analysis above the stages of the pipeline: graph scans, tracking ceilings, the test report."""
