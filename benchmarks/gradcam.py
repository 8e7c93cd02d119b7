"""Time Grad-CAM local maps: the original per-image loop, local_maps, the floor and Captum.

Usage::

    python benchmarks/gradcam.py [--images 16] [--size 256] [--repeats 5] [--device cpu]
    python benchmarks/gradcam.py --memory 256    # peak memory of local_maps on 256 images

All variants run in this process, on the same images and the same weights:

(a) ``original``  a re-creation of the original ``class_activation_map``: one
    image at a time, tensor hooks that copy each activation and gradient to
    NumPy, ``zero_grad`` + ``backward`` per class (which also fills the
    parameter gradients), the maps formed in NumPy;
(b) ``local_maps`` with its default chunking, and with a few fixed chunk sizes;
(c) ``floor``     one forward and one activation-gradient backward per class,
    nothing else (best chunk size): no implementation of the same maps can
    be faster than this with the same network;
(d) ``captum``    Captum's ``LayerGradCam`` on the same eight post-ReLU layers
    (one forward + backward per layer and class, as libraries do), if installed.

Times are medians of ``--repeats`` runs; the machine may be shared, so look at
the ratios more than at the seconds.
"""

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from micranet_utils.model.gradcam import LAYER_STRIDES, local_maps, sequential_view
from micranet_utils.model.network import LAYERS, MICRANet


def original_loop(model, images, num_classes):
    """The original algorithm, step by step (hooks, NumPy copies, one image at a time)."""
    model = model.eval()
    grads, outputs = {}, {}

    def save_grad(name):
        def hook(grad):
            grads[name] = grad.cpu().numpy()
        return hook

    def forward(x):
        for name in LAYERS:
            x = torch.relu(getattr(model, f"bnorm{name}")(getattr(model, f"conv{name}")(x)))
            x.register_hook(save_grad(name))
            outputs[name] = x.clone().detach().cpu().numpy()
            if name in ("1b", "2b", "3b"):
                x = model.maxpool(x)
        return model.linear1(model.dropout(model.global_pool(x).squeeze()))

    eye = torch.eye(num_classes)
    size = images.shape[-1]
    cams, predictions = [], []
    for image in images:
        pred = forward(image[None])
        per_class = []
        for c in range(num_classes):
            model.zero_grad()
            pred.backward(eye[c], retain_graph=True)
            per_layer = []
            for name in LAYERS:
                a, g = outputs[name], grads[name]
                alpha = g.mean(axis=(2, 3))
                cam = np.sum(a * alpha[:, :, None, None], axis=1)
                if name == "4b":
                    cam = np.maximum(cam, 0)
                low, high = cam.min(axis=(1, 2)), cam.max(axis=(1, 2))
                cam = (cam - low[:, None, None]) / (high - low + 1e-12)[:, None, None]
                cam = cam.repeat(size // cam.shape[1], axis=1).repeat(size // cam.shape[2], axis=2)
                per_layer.append(cam)
            per_class.append(np.swapaxes(np.array(per_layer), 0, 1).squeeze())
        cams.append(np.array(per_class))
        predictions.append((torch.sigmoid(pred) > 0.5).numpy())
    return np.array(cams), np.array(predictions)


def floor(model, images, num_classes, chunk_size):
    """One forward and one activation-gradient backward per class; nothing else."""
    for start in range(0, len(images), chunk_size):
        x = images[start:start + chunk_size].requires_grad_(True)
        logits, activations = model.forward_with_activations(x)
        for c in range(num_classes):
            torch.autograd.grad(logits[:, c].sum(), activations, retain_graph=c < num_classes - 1)


def captum_maps(model, images, num_classes):
    """Captum LayerGradCam for the eight layers, upsampled and min-max normalised like ours."""
    from captum.attr import LayerAttribution, LayerGradCam

    view = sequential_view(model).eval()
    out = np.empty((len(images), num_classes, len(LAYERS), *images.shape[-2:]), np.float32)
    for layer, name in enumerate(LAYERS):
        method = LayerGradCam(view, getattr(view, f"relu{name}"))
        for c in range(num_classes):
            cam = method.attribute(images, target=c, relu_attributions=(name == "4b"))
            cam = LayerAttribution.interpolate(cam, tuple(images.shape[-2:]), "nearest")[:, 0]
            low = cam.amin(dim=(1, 2), keepdim=True)
            high = cam.amax(dim=(1, 2), keepdim=True)
            out[:, c, layer] = ((cam - low) / (high - low + 1e-12)).detach().cpu().numpy()
    return out


def timed_round_robin(variants, repeats):
    """Median time of each variant; repeats are interleaved so that machine load hits all alike."""
    times = {name: [] for name in variants}
    for repeat in range(repeats):
        for name, function in variants.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
        print(f"round {repeat + 1}/{repeats}: " + ", ".join(f"{t[-1]:.2f}" for t in times.values()),
              flush=True)
    return {name: (statistics.median(runs), runs) for name, runs in times.items()}


def peak_memory(num_images, size):
    """Peak resident memory (GiB) of local_maps on `num_images` random images, in a child process."""
    import subprocess
    code = (
        "import resource, numpy as np, torch, sys; sys.path.insert(0, %r);"
        "from micranet_utils.model.network import MICRANet; from micranet_utils.model.gradcam import local_maps;"
        "m = MICRANet(2).eval(); x = np.random.rand(%d, 1, %d, %d).astype(np.float32);"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "maps, _ = local_maps(m, x);"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "print(base / 2**20, peak / 2**20, maps.nbytes / 2**30)"
        % (str(Path(__file__).resolve().parents[1]), num_images, size, size))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    base, peak, output = map(float, result.stdout.split())
    return base, peak, output


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-captum", action="store_true", help="skip Captum even if installed")
    parser.add_argument("--memory", type=int, metavar="N",
                        help="only measure the peak memory of local_maps on N images and exit")
    args = parser.parse_args(argv)

    if args.memory:
        base, peak, output = peak_memory(args.memory, args.size)
        print(f"local_maps on {args.memory} images of {args.size}x{args.size}, 2 classes: peak RSS "
              f"{peak:.2f} GiB (process before: {base:.2f} GiB; the returned maps alone: {output:.2f} GiB)")
        return 0

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = MICRANet(num_classes=args.classes).eval().to(device)
    images = torch.rand(args.images, 1, args.size, args.size, device=device)
    print(f"{args.images} images {args.size}x{args.size}, {args.classes} classes, device {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats}")

    original_model = copy.deepcopy(model)  # the original fills .grad; keep it away from the others
    expected, _ = original_loop(original_model, images, args.classes)
    ours, _ = local_maps(model, images)
    print(f"max |local_maps - original loop| = {np.abs(ours - expected).max():.2g}")

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run(function, *a, **k):
        return lambda: (function(*a, **k), sync())

    variants = {"(a) original loop": run(original_loop, original_model, images, args.classes),
                "(b) local_maps (default)": run(local_maps, model, images)}
    for chunk in (4, args.images):
        variants[f"    local_maps chunk={chunk}"] = run(local_maps, model, images, chunk_size=chunk)
    for chunk in (1, 4, args.images):
        variants[f"(c) floor chunk={chunk}"] = run(floor, model, images, args.classes, chunk)
    if not args.no_captum:
        try:
            import captum  # noqa: F401
        except ImportError:
            print("(d) Captum not installed: pip install captum")
        else:
            got = captum_maps(model, images, args.classes)
            print(f"max |captum - local_maps| = {np.abs(got - ours).max():.2g}")
            variants["(d) Captum LayerGradCam x8"] = run(captum_maps, model, images, args.classes)
    results = timed_round_robin(variants, args.repeats)
    best_floor = min(median for name, (median, _) in results.items() if name.startswith("(c)"))

    original = results["(a) original loop"][0]
    print(f"{'variant':30s} {'median s':>9s} {'vs original':>12s} {'vs best floor':>14s}   all runs")
    for name, (median, times) in results.items():
        print(f"{name:30s} {median:9.3f} {original / median:11.2f}x {median / best_floor:13.2f}x   "
              + " ".join(f"{t:.2f}" for t in times))
    default = results["(b) local_maps (default)"][0]
    print(f"local_maps is {original / default:.2f}x faster than the original loop (goal >= 1.5x) and "
          f"{default / best_floor:.2f}x the floor (goal <= 1.25x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
