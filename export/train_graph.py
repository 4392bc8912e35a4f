"""Build the Net's two ONNX models from a state_dict: inference and one whole training step.

- inference (`net.onnx`): input `input` (B, 1, 32, 32) -> output `output` (B, 10), dynamic B.
- forward with live parameters (build_forward, for the benchmark runner): inputs `input` and
  one per parameter, named by its state_dict key -> `output`.
- training step (`train_step.onnx`): inputs `input` (B, 1, 32, 32), `target` (B, 10) and one
  per parameter, named by its state_dict key (`conv1.weight`, ...); outputs `loss` (scalar)
  and `<key>.updated` for every parameter: p - lr * dloss/dp, one SGD step. The learning rate
  is model.LEARNING_RATE (0.01), baked into the graph as a constant (not an input).

Both use the standard ONNX domain only. ONNX Runtime has no usable training build any more (its
training packages stopped at 1.19.2, are deprecated and need onnx<=1.17; ONNX's Gradient op is
not implemented by ONNX Runtime), so the training step is traced as a plain function:
torch.func.grad_and_value over torch.func.functional_call, then the SGD update, captured with
make_fx and exported with torch.onnx.export(dynamo=True). Before export, each ReLU's backward
mask is moved ahead of the max-pool backward (_mask_before_unpool: same result on a 4x smaller
tensor).

The training step comes in two variants (TRAIN_GRAPHS), built by the same code:

- "unpool": the max-pool backward by MaxUnpool and the convolution's input gradient by Col2Im,
  as profiled fastest in ONNX Runtime on CPU (the benchmarks time both variants: onnxruntime and
  onnxruntime-portable in results/REPORT.md); but ONNX Runtime's CUDA provider implements
  neither op, OpenVINO has no MaxUnpool, and onnx's reference runtime fails on MaxUnpool.
- "portable": the max-pool backward as a mask (Equal against the pooled maximum, broadcast over
  each window; a CumSum keeps the first maximum) times the gradient, the input gradient by
  ConvTranspose(dY, W), and the MSE loss's backward without a Shape node (a CUDA session would
  put Shape's consumers on the CPU provider): ops every one of those runtimes implements.

Five aten ops (six in "portable") get translations of our own (_translations), chosen by
profiling ONNX Runtime on CPU:

- aten.max_pool2d_with_indices: one MaxPool with its Indices output, kept in ONNX's own
  flat (N*C*H*W) form. onnxscript's translation converts them to PyTorch's per-plane form
  with a second full-size MaxPool, which only the backward would consume. (Computing the same
  indices from SpaceToDepth and ArgMax was measured no faster.)
- aten.max_pool2d_with_indices_backward (no translation in onnxscript): "unpool": one MaxUnpool
  of the gradient at those indices into a zero tensor of the input's shape; "portable": each
  window's first maximum found from the input and the pooled value, no indices. Both exact
  (first maximum of each window, like PyTorch) for non-overlapping windows (kernel ==
  stride, as in the Net); other pooling configurations are refused.
- aten.convolution (training step only): im2col (one Slice per kernel offset, one Concat),
  one MatMul with the reshaped weight, plus the bias. The weight gradient needs the same
  im2col of the same input, and the exporter's common-subexpression pass keeps one copy, so
  the forward convolution costs one MatMul.
- aten.convolution_backward (no translation in onnxscript): input gradient by
  Col2Im(W^T dY) ("unpool") or ConvTranspose(dY, W) ("portable"); weight gradient by
  one batched MatMul of dY with that im2col, summed over the batch (faster than a Conv of
  the transposed input with the transposed dY); bias gradient by ReduceSum. Outputs the mask
  does not ask for are still tensors (a small constant, removed as dead code).
- aten.threshold_backward (ReLU's backward): grad * Cast(x > threshold), faster in ONNX
  Runtime than the default Where with a broadcast scalar.
- aten.mse_loss_backward ("portable" only): 2 (y - target) / count, the count a ReduceSum over
  the loss input instead of onnxscript's Shape.
"""

import contextlib
import io
import logging
import operator
import warnings

import torch
from torch.fx.experimental.proxy_tensor import make_fx

import model

INPUT_NAME, TARGET_NAME, OUTPUT_NAME, LOSS_NAME = "input", "target", "output", "loss"
UPDATED_SUFFIX = ".updated"
DEFAULT_OPSET = 18
# The exporter (torch.onnx, dynamo) starts at opset 18; onnx 1.23 and ONNX Runtime 1.32 reach 23.
SUPPORTED_OPSETS = range(18, 24)
TRACE_BATCH = 4  # batch size used while tracing; the exported batch dimension is dynamic
# The training-step variants (see the module docstring) and the one the CPU benchmark runs.
UNPOOL, PORTABLE = "unpool", "portable"
TRAIN_GRAPHS = (UNPOOL, PORTABLE)
DEFAULT_TRAIN_GRAPH = UNPOOL


def updated_name(key):
    return key + UPDATED_SUFFIX


def _pair(v):
    v = list(v)
    return v * 2 if len(v) == 1 else v


def _pool_window(kernel_size, stride, padding, dilation, ceil_mode):
    """(kernel, strides) of a max-pool the translations handle: non-overlapping windows
    (stride == kernel), no padding, no dilation, no ceil mode, as in the Net."""
    kernel = _pair(kernel_size)
    strides = _pair(stride) if len(stride) else kernel
    if strides != kernel or any(_pair(padding)) or _pair(dilation) != [1, 1] or ceil_mode:
        raise NotImplementedError(
            f"max-pool: only windows with stride == kernel, no padding, dilation or ceil_mode; "
            f"got kernel {kernel_size}, stride {stride}, padding {padding}, dilation {dilation}, "
            f"ceil {ceil_mode}"
        )
    return kernel, strides


def check_train_graph(train_graph):
    if train_graph not in TRAIN_GRAPHS:
        raise ValueError(f"unknown training graph {train_graph!r}; choose from: {', '.join(TRAIN_GRAPHS)}")


def _translations(train_graph=DEFAULT_TRAIN_GRAPH):
    """The custom translations for torch.onnx.export(custom_translation_table=...)."""
    from onnx import TensorProto
    from onnxscript import opset18 as op

    check_train_graph(train_graph)
    portable = train_graph == PORTABLE

    def im2col(x, padding, kernel_h, kernel_w, out_h, out_w):
        """(N, C, H, W) -> (N, C * KH * KW, Ho * Wo): one Slice per kernel offset, one Concat. The
        forward convolution and its weight gradient build it from the same input with the same
        nodes, so the exporter's common-subexpression pass keeps one copy."""
        in_channels = x.shape[1]
        if any(padding):
            x = op.Pad(x, op.Constant(value_ints=[0, 0, padding[0], padding[1]] * 2))
        axes = op.Constant(value_ints=[2, 3])
        new_axis = op.Constant(value_ints=[2])
        patches = [
            op.Unsqueeze(
                op.Slice(x, op.Constant(value_ints=[kh, kw]),
                         op.Constant(value_ints=[kh + out_h, kw + out_w]), axes),
                new_axis,
            )
            for kh in range(kernel_h)
            for kw in range(kernel_w)
        ]
        return op.Reshape(
            op.Concat(*patches, axis=2),  # (N, C_in, KH * KW, Ho * Wo) -> (N, C_in * KH * KW, Ho * Wo)
            op.Constant(value_ints=[0, in_channels * kernel_h * kernel_w, out_h * out_w]),
        )

    def convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
        if (transposed or groups != 1 or list(stride) != [1, 1] or list(dilation) != [1, 1]
                or bias is None):
            raise NotImplementedError(
                "convolution: only stride 1, dilation 1, groups 1, with bias, not transposed")
        out_channels, in_channels, kernel_h, kernel_w = weight.shape
        _, _, height, width = input.shape
        out_h, out_w = height + 2 * padding[0] - kernel_h + 1, width + 2 * padding[1] - kernel_w + 1
        cols = im2col(input, padding, kernel_h, kernel_w, out_h, out_w)
        w = op.Reshape(weight, op.Constant(value_ints=[out_channels, in_channels * kernel_h * kernel_w]))
        y = op.Add(op.MatMul(w, cols), op.Reshape(bias, op.Constant(value_ints=[out_channels, 1])))
        return op.Reshape(y, op.Constant(value_ints=[0, out_channels, out_h, out_w]))

    def max_pool2d_with_indices(
        self, kernel_size, stride=(), padding=(0, 0), dilation=(1, 1), ceil_mode=False
    ):
        kernel, strides = _pool_window(kernel_size, stride, padding, dilation, ceil_mode)
        # Indices stay in ONNX's flat (N*C*H*W) form: only our backward reads them, and
        # converting them to PyTorch's per-plane form would cost a second full MaxPool.
        return op.MaxPool(self, kernel_shape=kernel, strides=strides, storage_order=0)

    def max_pool2d_with_indices_backward(
        grad_output, self, kernel_size, stride, padding, dilation, ceil_mode, indices
    ):
        kernel, strides = _pool_window(kernel_size, stride, padding, dilation, ceil_mode)
        if portable:
            return first_max_backward(grad_output, self, kernel, strides)
        # Windows do not overlap, so every input element receives at most one gradient.
        return op.MaxUnpool(grad_output, indices, op.Shape(self), kernel_shape=kernel, strides=strides)

    def first_max_backward(grad_output, self, kernel, strides):
        """The max-pool backward without indices: each window's gradient goes to the first
        element (row-major) equal to the window's maximum, as PyTorch's backward routes ties.
        Windows are (kernel_h, kernel_w) blocks that do not overlap; rows and columns past the
        last whole window (floor mode) get zero."""
        kernel_h, kernel_w = kernel
        _, channels, height, width = self.shape  # batch is dynamic, the rest static
        out_h, out_w = height // kernel_h, width // kernel_w
        covered_h, covered_w = out_h * kernel_h, out_w * kernel_w
        x = self
        if (covered_h, covered_w) != (height, width):
            x = op.Slice(x, op.Constant(value_ints=[0, 0]), op.Constant(value_ints=[covered_h, covered_w]),
                         op.Constant(value_ints=[2, 3]))
        # The forward's own MaxPool node (the exporter's common-subexpression pass keeps one).
        pooled, _ = op.MaxPool(self, kernel_shape=kernel, strides=strides, storage_order=0)
        # (N, C, Ho*KH, Wo*KW) -> (N, C, Ho, Wo, KH*KW): each window's elements on the last axis.
        windows = op.Transpose(
            op.Reshape(x, op.Constant(value_ints=[0, channels, out_h, kernel_h, out_w, kernel_w])),
            perm=[0, 1, 2, 4, 3, 5],
        )
        windows = op.Reshape(windows,
                             op.Constant(value_ints=[0, channels, out_h, out_w, kernel_h * kernel_w]))
        last = op.Constant(value_ints=[4])
        is_max = op.Cast(op.Equal(windows, op.Unsqueeze(pooled, last)), to=TensorProto.FLOAT)
        # The running count of maxima along the window is 1 from the first one on: is_max there only.
        first = op.Mul(is_max, op.Cast(op.Equal(op.CumSum(is_max, op.Constant(value_int=4)),
                                                op.Constant(value_float=1.0)), to=TensorProto.FLOAT))
        grad = op.Mul(op.Unsqueeze(grad_output, last), first)
        grad = op.Transpose(
            op.Reshape(grad, op.Constant(value_ints=[0, channels, out_h, out_w, kernel_h, kernel_w])),
            perm=[0, 1, 2, 4, 3, 5],
        )
        grad = op.Reshape(grad, op.Constant(value_ints=[0, channels, covered_h, covered_w]))
        if (covered_h, covered_w) != (height, width):
            pads = [0, 0, 0, 0, 0, 0, height - covered_h, width - covered_w]  # zero rows, columns at the end
            grad = op.Pad(grad, op.Constant(value_ints=pads))
        return grad

    def convolution_backward(
        grad_output,
        input,
        weight,
        bias_sizes,
        stride,
        padding,
        dilation,
        transposed,
        output_padding,
        groups,
        output_mask,
    ):
        if transposed or groups != 1 or list(stride) != [1, 1] or list(dilation) != [1, 1]:
            raise NotImplementedError(
                "convolution backward: only stride 1, dilation 1, groups 1, not transposed"
            )
        pads = list(padding) * 2
        out_channels, in_channels, kernel_h, kernel_w = weight.shape
        _, _, out_h, out_w = grad_output.shape  # batch is dynamic, the rest static
        unused = op.Constant(value_floats=[0.0])
        grad_input = grad_weight = grad_bias = unused
        dy = op.Reshape(
            grad_output, op.Constant(value_ints=[0, out_channels, out_h * out_w])
        )  # (N, C_out, Ho*Wo)
        if output_mask[0] and portable:
            grad_input = op.ConvTranspose(grad_output, weight, pads=pads)  # stride 1: output (H, W)
        elif output_mask[0]:
            # dX = col2im(W^T dY): the weight-by-gradient product per patch, then each patch's values
            # added back at its place (faster in ONNX Runtime than ConvTranspose(dY, W)).
            _, _, in_h, in_w = input.shape
            w_t = op.Transpose(op.Reshape(weight, op.Constant(value_ints=[out_channels, -1])), perm=[1, 0])
            grad_input = op.Col2Im(op.MatMul(w_t, dy), op.Constant(value_ints=[in_h, in_w]),
                                   op.Constant(value_ints=[kernel_h, kernel_w]), pads=pads)
        if output_mask[1]:
            # dW[o, i, kh, kw] = sum_{n,h,w} dY[n, o, h, w] * X[n, i, h + kh, w + kw]: the input's
            # kernel-sized patches (im2col by one Slice per kernel offset), then one batched
            # MatMul against dY and a sum over the batch.
            cols = im2col(input, padding, kernel_h, kernel_w, out_h, out_w)
            per_sample = op.MatMul(dy, op.Transpose(cols, perm=[0, 2, 1]))  # (N, C_out, C_in*KH*KW)
            grad_weight = op.Reshape(
                op.ReduceSum(per_sample, op.Constant(value_ints=[0]), keepdims=0),
                op.Constant(value_ints=[out_channels, in_channels, kernel_h, kernel_w]),
            )
        if output_mask[2]:
            grad_bias = op.ReduceSum(
                op.ReduceSum(dy, op.Constant(value_ints=[2]), keepdims=0),
                op.Constant(value_ints=[0]),
                keepdims=0,
            )
        return grad_input, grad_weight, grad_bias

    def threshold_backward(grad_output, self, threshold):
        # ReLU's backward as grad * (self > threshold): ONNX Runtime's Where with a broadcast
        # scalar is several times slower than this Greater, Cast and Mul.
        threshold = op.CastLike(op.Constant(value_float=float(threshold)), self)
        return op.Mul(grad_output, op.CastLike(op.Greater(self, threshold), grad_output))

    def mse_loss_backward(grad_output, self, target, reduction):
        # onnxscript divides by the element count from Shape(self); a CUDA session would place
        # that Shape's consumers on the CPU provider. The count comes from a tensor op instead:
        # self > self is false everywhere (NaN too), so its negation counts every element.
        if reduction != 1:  # torch's Reduction.Mean, what model.loss_fn uses
            raise NotImplementedError(f"mse_loss backward: only the mean reduction, got {reduction}")
        count = op.ReduceSum(op.CastLike(op.Not(op.Greater(self, self)), self), keepdims=0)
        two = op.CastLike(op.Constant(value_float=2.0), self)
        return op.Mul(op.Mul(grad_output, op.Sub(self, target)), op.Div(two, count))

    aten = torch.ops.aten
    table = {
        aten.threshold_backward.default: threshold_backward,
        aten.max_pool2d_with_indices.default: max_pool2d_with_indices,
        aten.max_pool2d_with_indices_backward.default: max_pool2d_with_indices_backward,
        aten.convolution_backward.default: convolution_backward,
        aten.convolution.default: convolution,
    }
    if portable:
        table[aten.mse_loss_backward.default] = mse_loss_backward
    return table




def trace_train_step(state_dict, lr=model.LEARNING_RATE, lowering=None):
    """One SGD step as an fx GraphModule: (input, target, *params) -> (loss, *updated params).

    `lowering`: a TorchFunctionMode class active while the Net runs (bench.backends.aotinductor
    traces with the compile backend's im2col lowering); None traces the Net as written."""
    net = model.net_for_inference(state_dict)
    keys = list(state_dict)

    def step(x, target, *params):
        p = dict(zip(keys, params, strict=True))

        def loss_of(p):
            with lowering() if lowering else contextlib.nullcontext():
                return model.loss_fn(torch.func.functional_call(net, p, (x,)), target)

        grads, loss = torch.func.grad_and_value(loss_of)(p)
        return (loss, *[p[k] - lr * grads[k] for k in keys])

    x, target = model.make_batch(TRACE_BATCH)
    params = [v.detach().to(torch.float32).clone() for v in state_dict.values()]
    graph_module = make_fx(step, tracing_mode="symbolic")(x, target, *params)
    _mask_before_unpool(graph_module)
    return graph_module, (x, target, *params)


def trace_forward(state_dict, lowering=None):
    """The forward pass as an fx GraphModule with a symbolic batch: (input, *params) -> output.
    `lowering` as in trace_train_step."""
    net = model.net_for_inference(state_dict)
    keys = list(state_dict)

    def forward(x, *params):
        with lowering() if lowering else contextlib.nullcontext():
            return torch.func.functional_call(net, dict(zip(keys, params, strict=True)), (x,))

    x, _ = model.make_batch(TRACE_BATCH)
    return make_fx(forward, tracing_mode="symbolic")(x, *[v.detach() for v in state_dict.values()])


def _mask_before_unpool(graph_module):
    """Apply each ReLU's backward mask to the pooled gradient, before the max-pool backward.

    relu -> max_pool2d gives, in the backward, threshold_backward(maxpool_backward(g, r), r, 0):
    a mask over the full-size tensor r. The max-pool backward puts each g at its window's
    argmax p, where r[p] equals the pooled value P, so masking g by P > 0 first is the same
    result on a tensor k*k times smaller. Rewritten in place; returns the number of rewrites.
    """
    aten = torch.ops.aten
    graph, count = graph_module.graph, 0
    for node in list(graph.nodes):
        if node.target != aten.threshold_backward.default or node.args[2] != 0:
            continue
        unpool, relu_out = node.args[0], node.args[1]
        if (
            getattr(unpool, "target", None) != aten.max_pool2d_with_indices_backward.default
            or unpool.args[1] is not relu_out
            or len(unpool.users) != 1
        ):
            continue
        pool = unpool.args[7].args[0]  # indices = getitem(max_pool2d_with_indices(relu_out), 1)
        pooled = [u for u in pool.users if u.target is operator.getitem and u.args[1] == 0]
        if pool.target != aten.max_pool2d_with_indices.default or pool.args[0] is not relu_out or not pooled:
            continue
        with graph.inserting_before(unpool):
            masked = graph.call_function(aten.threshold_backward.default, (unpool.args[0], pooled[0], 0))
            new_unpool = graph.call_function(unpool.target, (masked, *unpool.args[1:]))
        node.replace_all_uses_with(new_unpool)
        graph.erase_node(node)
        graph.erase_node(unpool)
        count += 1
    graph.lint()
    graph_module.recompile()
    return count


@contextlib.contextmanager
def _quiet():
    """The exporter prints progress lines and warnings; keep the CLI and tests readable."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _drop_unused_indices(model_proto):
    """Remove MaxPool's optional Indices output where nothing reads it.

    The exporter creates every output an op's schema lists; a MaxPool that yields indices
    runs ONNX Runtime's slower index-tracking kernel, so an unread one is dropped.
    """
    graph = model_proto.graph
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for node in graph.node:
        if node.op_type == "MaxPool" and len(node.output) == 2 and node.output[1] not in used:
            del node.output[1]
    return model_proto


def _export(module, args, input_names, output_names, dynamic_shapes, opset, custom=None):
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(
            f"unsupported opset {opset}; choose from {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}"
        )
    with _quiet():
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            custom_translation_table=custom,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    return _drop_unused_indices(program.model_proto)


def build_inference(state_dict, opset=DEFAULT_OPSET):
    """The inference model as an onnx.ModelProto (parameters stored as initializers)."""
    net = model.net_for_inference({k: v.to(torch.float32) for k, v in state_dict.items()})
    x, _ = model.make_batch(TRACE_BATCH)
    batch = torch.export.Dim("batch", min=1)
    return _export(net, (x,), [INPUT_NAME], [OUTPUT_NAME], ({0: batch},), opset)


def build_forward(state_dict, opset=DEFAULT_OPSET):
    """The inference model with the parameters as inputs (`input`, then one per state_dict key),
    not initializers: the ONNX Runtime runner binds its current parameter buffers to them, as
    compile and aotinductor take theirs, so training never forces a rebuild."""
    keys = list(state_dict)
    params = [v.detach().to(torch.float32).clone() for v in state_dict.values()]
    graph_module = trace_forward(dict(zip(keys, params)))
    x, _ = model.make_batch(TRACE_BATCH)
    batch = torch.export.Dim("batch", min=1)
    return _export(graph_module, (x, *params), [INPUT_NAME, *keys], [OUTPUT_NAME],
                   ({0: batch}, *[None] * len(keys)), opset)


def build_train_step(state_dict, opset=DEFAULT_OPSET, train_graph=DEFAULT_TRAIN_GRAPH):
    """The one-step training model as an onnx.ModelProto (parameters are inputs, not initializers),
    as the variant `train_graph` (one of TRAIN_GRAPHS) computes it."""
    check_train_graph(train_graph)
    keys = list(state_dict)
    graph_module, args = trace_train_step(state_dict)
    batch = torch.export.Dim("batch", min=1)
    dynamic = ({0: batch}, {0: batch}, *[None] * len(keys))
    return _export(
        graph_module,
        args,
        [INPUT_NAME, TARGET_NAME, *keys],
        [LOSS_NAME, *map(updated_name, keys)],
        dynamic,
        opset,
        custom=_translations(train_graph),
    )


def check(model_proto):
    """Full ONNX checker and strict shape inference; raise when either fails or a node leaves
    the standard domain."""
    import onnx

    onnx.checker.check_model(model_proto, full_check=True)
    onnx.shape_inference.infer_shapes(model_proto, check_type=True, strict_mode=True)
    domains = {n.domain for n in model_proto.graph.node} | {o.domain for o in model_proto.opset_import}
    if domains - {"", "ai.onnx"}:
        raise ValueError(f"non-standard ONNX domains in the graph: {sorted(domains - {'', 'ai.onnx'})}")
    if model_proto.functions:
        raise ValueError("the model carries local functions; expected plain standard-domain nodes")
