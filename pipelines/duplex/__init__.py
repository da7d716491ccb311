"""Full-duplex data: synthetic scenarios with labelled turn-taking events (``scenarios``), the
texts and tool schemas they are written from (``script_bank``), and the duplex policy mode."""
