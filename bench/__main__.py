"""`make bench`: every benchmark, one after the other. Results are printed and saved under bench/results/."""

from bench import (
    batching,
    gpu,
    img2img,
    memory,
    outcomes,
    overhead,
    peer,
    previews,
    scaling,
    streams,
    submits,
    torch_threads,
    webhooks,
)

if __name__ == "__main__":
    overhead.main()
    outcomes.main()
    webhooks.main()
    streams.main()
    previews.main()
    torch_threads.main()
    memory.main()
    scaling.main()
    submits.main()
    peer.main()
    batching.main()
    img2img.main()
    gpu.main()  # reports "skipped: no GPU" without CUDA
