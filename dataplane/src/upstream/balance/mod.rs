//! Load balancers: RoundRobin, LeastRequest (power of two choices), Random, ConsistentHash (Maglev), slow start.
