"""`ironbook demo`: the big race day — a real local cluster under a surge of
bets with faults injected at the peak, a live dashboard, the history
checker's verdict, and a report (markdown, JSON and a chart)."""
