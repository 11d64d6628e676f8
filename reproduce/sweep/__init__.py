"""The driver's picture of a sweep: the specs, profiles and clusters it reads,
the runs it plans, where each run stands (``status``) and what is submitted
again (``submission``). Nothing here runs inside a job."""
