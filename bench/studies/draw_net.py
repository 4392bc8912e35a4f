"""Draw the tutorial's Net as pictures: its structure and its computation graph.

    python -m bench.draw_net [--out results]

Writes results/net_structure.png (layers with their parameter shapes, and the activation
shapes for one (1, 1, 32, 32) input, in the style of the tutorial's LeNet figure) and
results/computation_graph.png (input -> conv2d -> relu -> maxpool2d -> ... -> MSELoss -> loss,
tensor shapes on the edges). Nothing is typed by hand: every op, shape and parameter comes
from running the Net and its loss once under a torch function mode that records each call.
"""

import os
import sys

import torch
from torch.overrides import TorchFunctionMode

import model
from bench import cli
from bench.files import write_atomic

TUTORIAL_NAMES = {"max_pool2d": "maxpool2d", "mse_loss": "MSELoss"}  # the tutorial's spelling


class Recorder(TorchFunctionMode):
    """Records every torch call that returns a tensor: its name, tensor inputs, parameters, output."""

    def __init__(self, net):
        super().__init__()
        self.param_names = {id(p): name for name, p in net.named_parameters()}
        self.ops = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):  # skips x.dim(), x.size(), x.shape and other queries
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            self.ops.append({
                "op": func.__name__,
                "inputs": [tuple(t.shape) for t in tensors if id(t) not in self.param_names],
                "params": [(self.param_names[id(t)], tuple(t.shape))
                           for t in tensors if id(t) in self.param_names],
                "args": [a for a in args if not isinstance(a, torch.Tensor)],
                "out": tuple(out.shape),
            })
        return out


def trace():
    """The ops of one forward pass and MSE loss of the Net on one (1, 1, 32, 32) input."""
    net = model.make_net(seed=0)
    x, target = model.make_batch(1)
    with Recorder(net) as recorder:
        model.loss_fn(net(x), target)
    return net, tuple(x.shape), tuple(target.shape), recorder.ops


def shape_text(shape):
    return "scalar ()" if shape == () else str(shape)


def box(ax, x, y, text, width, height, color, fontsize=9, weight="normal"):
    from matplotlib.patches import FancyBboxPatch
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                boxstyle="round,pad=0.02,rounding_size=0.08", facecolor=color,
                                edgecolor="black", linewidth=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, weight=weight)


def arrow(ax, start, end, color="black"):
    ax.annotate("", end, start, arrowprops=dict(arrowstyle="-|>", color=color, lw=1.2, shrinkA=0, shrinkB=0))


def layer_stages(net, ops):
    """Group the recorded ops into the tutorial's layers: a parametrized op takes the relu after it."""
    stages = []
    for op in ops:
        if op["op"] == "mse_loss":
            break
        if op["op"] == "relu" and stages and stages[-1]["params"]:
            stages[-1]["relu"] = True
            stages[-1]["out"] = op["out"]
            continue
        if op["params"]:
            name = op["params"][0][0].rsplit(".", 1)[0]
            module = net.get_submodule(name)
            if isinstance(module, torch.nn.Conv2d):
                kind = f"Conv2d({module.in_channels}, {module.out_channels}, {module.kernel_size[0]})"
            else:
                kind = f"Linear({module.in_features}, {module.out_features})"
            title = f"{name}\n{kind}"
        elif op["op"] == "max_pool2d":
            size = op["args"][0]
            size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
            title = f"max_pool2d {size[0]}x{size[1]}"
        elif op["op"] == "view":
            title = f"view(-1, {op['out'][1]})"
        else:
            title = op["op"]
        stages.append({"title": title, "params": op["params"], "out": op["out"], "relu": False})
    return stages


def draw_structure(net, input_shape, ops, path):
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    stages = layer_stages(net, ops)
    shapes = [input_shape] + [stage["out"] for stage in stages]
    fig, ax = plt.subplots()
    gap, x = 3.3, 0.0
    centers = []
    for i, shape in enumerate(shapes):
        if len(shape) == 4:  # feature maps: a stack of squares drawn to scale, 32x32 = 2.4 units
            channels, side = shape[1], 2.4 * shape[2] / 32
            shown = min(channels, 8)
            step = 0.12
            bottom = 1.2 - (side + (shown - 1) * step) / 2
            for k in range(shown):  # back to front: up-left to down-right
                ax.add_patch(Rectangle((x + k * step, bottom + (shown - 1 - k) * step), side, side,
                                       facecolor=plt.cm.Blues(0.25 + 0.5 * k / shown), edgecolor="black",
                                       lw=0.7))
            width = side + (shown - 1) * step
            label = f"{channels}@{shape[2]}x{shape[3]}"
        else:  # a vector: a bar whose height grows with its length
            side = 0.1 * shape[1] ** 0.5
            width = 0.35
            ax.add_patch(Rectangle((x, 1.2 - side / 2), width, side, facecolor=plt.cm.Oranges(0.4),
                                   edgecolor="black"))
            label = f"{shape[1]}"
        name = "input" if i == 0 else ("output" if i == len(shapes) - 1 else "")
        ax.text(x + width / 2, 2.75, f"{name}\n{label}".strip(), ha="center", va="bottom", fontsize=11,
                weight="bold")
        ax.text(x + width / 2, -0.35, shape_text(shape), ha="center", va="top", fontsize=9, color="dimgray")
        centers.append((x, x + width))
        x += width + gap

    for stage, left, right in zip(stages, centers[:-1], centers[1:], strict=True):
        start, end = left[1] + 0.1, right[0] - 0.1
        middle = (start + end) / 2
        lines = [stage["title"]] + [f"{name.rsplit('.', 1)[1]} {shape}" for name, shape in stage["params"]]
        lines += ["+ relu"] if stage["relu"] else []
        color = "#fde9c9" if stage["params"] else "#e8e8e8"
        box(ax, middle, -2.3, "\n".join(lines), gap - 0.3, 2.0, color, fontsize=10)
        arrow(ax, (start, 1.2), (end, 1.2))
        ax.plot([middle, middle], [1.2, -1.3], color="gray", lw=0.8, ls=":")

    total = sum(p.numel() for p in net.parameters())
    ax.set_title(f"The tutorial's Net: activation shapes for one {input_shape} input (top), layers and "
                 f"their parameter shapes (boxes); {len(list(net.parameters()))} parameter tensors, "
                 f"{total:,} parameters", fontsize=12)
    xlim, ylim = (-0.5, x - gap + 0.5), (-3.5, 3.9)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    fig.set_size_inches(22, 22 * (ylim[1] - ylim[0]) / (xlim[1] - xlim[0]) + 0.6)
    ax.axis("off")
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


def draw_graph(input_shape, target_shape, ops, path):
    import matplotlib.pyplot as plt

    nodes = [("input", None), *((TUTORIAL_NAMES.get(op["op"], op["op"]), op) for op in ops), ("loss", None)]
    edges = [input_shape] + [op["out"] for op in ops]  # the shape leaving each node but the last
    step = 1.0
    fig, ax = plt.subplots(figsize=(9, 0.62 * len(nodes) + 1.2))
    ys = [-i * step for i in range(len(nodes))]
    for i, ((name, op), y) in enumerate(zip(nodes, ys, strict=True)):
        end = i in (0, len(nodes) - 1)
        box(ax, 0, y, name, 1.8, 0.5, "#cfe2f3" if end else "#fde9c9" if op["params"] else "#eeeeee",
            fontsize=11, weight="bold" if end else "normal")
        if i < len(nodes) - 1:
            arrow(ax, (0, y - 0.25), (0, ys[i + 1] + 0.25))
            ax.text(0.15, (y + ys[i + 1]) / 2, shape_text(edges[i]), va="center", fontsize=10, color="navy")
        if op and op["params"]:
            for k, (pname, shape) in enumerate(op["params"]):
                py = y + 0.16 - 0.32 * k
                ax.text(-2.1, py, f"{pname} {shape}", ha="right", va="center", fontsize=9, color="dimgray")
                arrow(ax, (-2.05, py), (-0.92, y + 0.05 - 0.1 * k), color="gray")
        if op and op["op"] == "mse_loss":
            ax.text(-2.1, y, f"target {target_shape}", ha="right", va="center", fontsize=9, color="dimgray")
            arrow(ax, (-2.05, y), (-0.92, y), color="gray")
    ax.set_title(f"Computation graph of the Net and its MSE loss for one {input_shape} input\n"
                 "(tensor shapes on the edges, parameters and target on the left)", fontsize=11)
    ax.set_xlim(-4.6, 3.2)
    ax.set_ylim(ys[-1] - 0.5, 0.5)
    ax.axis("off")
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


def main(argv=None):
    parser = cli.Parser(prog="python -m bench.draw_net", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=cli.output_folder, default="results",
                        help="folder for the PNGs (default: %(default)s)")
    try:
        args = parser.parse_args(argv)
    except cli.UsageError as error:
        print(f"{cli.prog('python -m bench.draw_net')}: error: {error}", file=sys.stderr)
        return 2
    import matplotlib
    matplotlib.use("Agg")

    net, input_shape, target_shape, ops = trace()
    os.makedirs(args.out, exist_ok=True)
    structure = os.path.join(args.out, "net_structure.png")
    graph = os.path.join(args.out, "computation_graph.png")
    draw_structure(net, input_shape, ops, structure)
    draw_graph(input_shape, target_shape, ops, graph)
    print(f"wrote {structure}, {graph}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
