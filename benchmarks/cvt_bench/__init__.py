"""Performance benchmark: cvt_lab's CvT beside transformers' ``CvtForImageClassification``, in one process.

    python -m benchmarks.cvt_bench [--out FILE] [--device cpu|cuda] [--batch N] [--precision fp32|bf16|both]
                                   [--compile] [--data PATH] [--quick]
    make bench        # the full CPU run, writes experiments/bench/bench_cpu.json

Run from the repository root (it imports cvt_lab, installed or from src/). Both models get the same batch,
resolution, thread count, precision (autocast), optimizer (AdamW, fused where available) and random data;
their timed iterations are interleaved (ours, theirs, theirs, ours, ...) so that load from other processes
hits both alike. Every figure is a median over timed iterations after warm-up, and every ratio is computed
from the figures stored beside it. Sections of the JSON:

- ``matmul_peak_gflops``: a large ``torch.mm`` in fp32 and bf16, measured in the same run: the denominator
  of MFU.
- ``throughput``: images/s of a training step (forward, backward, optimizer step) and of inference (eval,
  ``inference_mode``), per precision; achieved GFLOP/s from the counted MACs (training counts 3x the
  forward) and its fraction of the matmul peak of that precision (MFU). On CUDA with ``--compile`` also a
  compiled twin of each model (``ours_compiled``, ``theirs_compiled``), ``throughput_by_size`` at the other
  ``--resolutions`` and ``inference_batch`` (bf16 inference at ``--infer-batch``).
- ``memory``: peak training memory at ``--memory-batch``: peak live tensor bytes during a training step, from
  the allocator events of ``torch.profiler`` (CPU) or ``torch.cuda.max_memory_allocated`` (CUDA); on CPU also
  the peak RSS growth of a fresh subprocess.
- ``resolution`` (CPU): time per image at each ``--resolutions`` for both models and the counted MACs.
- ``levers``: each speed lever of ``cvt_lab.models.cvt.FAST_PATHS`` switched off alone (ours, eager), on CPU
  also the glibc allocator setting (both models, in a subprocess) and ``torch.compile`` (a subprocess).
- ``numerics``: fp32 logits of the optimized path against the plain formulation (all levers off).
- ``training_loop``: one ``python -m cvt_lab`` job timed by a Lightning profiler (see :mod:`.loop`): start-up,
  data wait, and the share of the wall time of each part; ``digits_accuracy`` (CPU): the default run in fp32
  and bf16.
- ``loader`` (``--data PATH``): the imagefolder training loader's images/s per worker count (:mod:`.loader`)
  beside the model's training images/s.
- ``targets``: the issue's targets (CPU or GPU ones), each with the measured value and whether it is met.
"""
