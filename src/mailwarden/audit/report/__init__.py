"""The audit's reports, each a pure function of one :class:`~mailwarden.audit.model.AuditReport`:
text for a terminal, JSON for programs, one HTML file for people, a Nagios/Icinga plugin answer
and Prometheus textfile metrics for monitoring. None of them looks anything up."""
