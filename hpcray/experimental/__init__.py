"""Ray's ``ray.experimental`` modules that hpcray provides: ``tqdm_ray``."""
