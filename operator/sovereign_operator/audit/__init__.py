"""The tamper-evident audit trail: records, hash chain, signed checkpoints, sinks, verify.

    record.py      the record model (actor, object, change, model, hashes)
    diff.py        the spec diff a record carries
    canonical.py   RFC 8785 canonical JSON and the record hash
    chain.py       sequence numbers and links; finding the head of an existing log
    checkpoint.py  ed25519 signed checkpoints, keys, the public-key ConfigMap
    segments.py    rotated file names and chain order
    verify.py      prove a log intact or locate the damage (findings.py: the results)
    sinks.py       the durable file sink; forwarding.py: stdout, syslog, HTTP via a spool
    health.py      sink health, AuditSinkHealthy, audit.failurePolicy
    trail.py       AuditTrail, the facade the operator records through

Nothing is re-exported here, so `sovereign audit verify` and the worker-side tools load
only what they use.
"""
