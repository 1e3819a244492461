"""Scale-out on Redis Streams: the broker, the workers behind it, the replicas' follower, and a
cluster of them on one machine."""
