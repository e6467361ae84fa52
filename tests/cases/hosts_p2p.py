"""The cases of hosts.py with HPCRAY_REMOTE_FETCH=p2p: the arena is Win.Allocate_shared per
host, and other hosts fetch by point-to-point messages from the producer's comm thread."""

from .hosts import (case_driver_put_reaches_every_rank, case_freed_object_on_other_host_is_lost_not_garbage,
                    case_objects_from_every_rank_reach_the_driver, case_placement_group_strategies_follow_hosts,
                    case_worker_to_worker_across_hosts, case_busy_producer_still_serves_its_objects)

ENV = {"HPCRAY_RANKS_PER_HOST": "2", "HPCRAY_REMOTE_FETCH": "p2p"}

__all__ = ["case_driver_put_reaches_every_rank", "case_freed_object_on_other_host_is_lost_not_garbage",
           "case_objects_from_every_rank_reach_the_driver", "case_placement_group_strategies_follow_hosts",
           "case_worker_to_worker_across_hosts", "case_busy_producer_still_serves_its_objects"]
