"""bench/compare, in parts: common (constants, helpers), scenarios, brokers (set-up,
configurations, processes), running (one scenario against one broker) and report."""
