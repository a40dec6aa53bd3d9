"""Writers of the two external checkpoint formats, for tests only.

They produce files with the structure the reference projects write: rosinality ``.pt`` dicts with rosinality
key names and shapes, NVIDIA network pickles whose networks reduce to
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` (module source included), and NVIDIA TensorFlow-era
pickles (a tuple of ``dnnlib.tflib.network.Network`` objects, as the official stylegan2-ffhq-config-f.pkl). No NVIDIA
code is imported: the globals a pickle needs are faked in ``sys.modules`` only while dumping.
"""
from __future__ import annotations

import argparse
import contextlib
import pickle
import sys
import types
from collections import OrderedDict

import torch


def rosinality_state_dict(G) -> dict[str, torch.Tensor]:
    """Our generator's tensors under rosinality/stylegan2-pytorch names and shapes."""
    sd = G.state_dict()
    out = {}
    n_mlp = G.mapping_network.num_layers
    for n in range(n_mlp):
        out[f"style.{n + 1}.weight"] = sd[f"mapping_network.fc{n}.weight"].clone()
        out[f"style.{n + 1}.bias"] = sd[f"mapping_network.fc{n}.bias"].clone()
    s = "synthesis_network."
    out["input.input"] = sd[s + "const"].unsqueeze(0).clone()
    blur = torch.tensor([1.0, 3, 3, 1]).outer(torch.tensor([1.0, 3, 3, 1])) / 64 * 4

    def styled(ours, theirs, j, up):
        out[f"{theirs}.conv.weight"] = sd[f"{s}{ours}.weight"].unsqueeze(0).clone()
        out[f"{theirs}.conv.modulation.weight"] = sd[f"{s}{ours}.affine.weight"].clone()
        out[f"{theirs}.conv.modulation.bias"] = sd[f"{s}{ours}.affine.bias"].clone()
        out[f"{theirs}.noise.weight"] = sd[f"{s}{ours}.noise_strength"].reshape(1).clone()
        out[f"{theirs}.activate.bias"] = sd[f"{s}{ours}.bias"].clone()
        out[f"noises.noise_{j}"] = sd[f"{s}{ours}.noise_const"][None, None].clone()
        if up:
            out[f"{theirs}.conv.blur.kernel"] = blur.clone()

    def torgb(ours, theirs, up):
        out[f"{theirs}.conv.weight"] = sd[f"{s}{ours}.weight"].unsqueeze(0).clone()
        out[f"{theirs}.conv.modulation.weight"] = sd[f"{s}{ours}.affine.weight"].clone()
        out[f"{theirs}.conv.modulation.bias"] = sd[f"{s}{ours}.affine.bias"].clone()
        out[f"{theirs}.bias"] = sd[f"{s}{ours}.bias"].reshape(1, -1, 1, 1).clone()
        if up:
            out[f"{theirs}.upsample.kernel"] = blur.clone()

    styled("b4.conv1", "conv1", 0, False)
    torgb("b4.torgb", "to_rgb1", False)
    for i, k in enumerate(range(3, G.synthesis_network.log2 + 1)):
        styled(f"b{2 ** k}.conv0", f"convs.{2 * i}", 2 * k - 5, True)
        styled(f"b{2 ** k}.conv1", f"convs.{2 * i + 1}", 2 * k - 4, False)
        torgb(f"b{2 ** k}.torgb", f"to_rgbs.{i}", True)
    return out


def rosinality_discriminator_state_dict(D) -> dict[str, torch.Tensor]:
    """Our discriminator's tensors under rosinality/stylegan2-pytorch ``Discriminator`` names (the inverse of the
    loader's table: ``convs.0`` fromRGB, ``convs.j`` ResBlocks, ``final_conv``, ``final_linear``)."""
    sd = D.state_dict()
    out = {"convs.0.0.weight": sd["fromrgb.weight"], "convs.0.1.bias": sd["fromrgb.bias"],
           "final_conv.0.weight": sd["conv.weight"], "final_conv.1.bias": sd["conv.bias"],
           "final_linear.0.weight": sd["fc.weight"], "final_linear.0.bias": sd["fc.bias"],
           "final_linear.1.weight": sd["out.weight"], "final_linear.1.bias": sd["out.bias"]}
    for j, res in enumerate(D.block_resolutions, start=1):
        out.update({f"convs.{j}.conv1.0.weight": sd[f"b{res}.conv0.weight"],
                    f"convs.{j}.conv1.1.bias": sd[f"b{res}.conv0.bias"],
                    f"convs.{j}.conv2.1.weight": sd[f"b{res}.conv1.weight"],
                    f"convs.{j}.conv2.2.bias": sd[f"b{res}.conv1.bias"],
                    f"convs.{j}.skip.1.weight": sd[f"b{res}.skip.weight"]})
    return {k: v.clone() for k, v in out.items()}


def write_rosinality(G, path, latent_avg: bool = True, training: bool = False) -> None:
    sd = rosinality_state_dict(G)
    if training:  # what rosinality's train.py saves: no latent_avg, args Namespace, optimizer states
        opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))])
        ckpt = {"g": sd, "d": {}, "g_ema": sd, "g_optim": opt.state_dict(), "d_optim": opt.state_dict(),
                "args": argparse.Namespace(size=G.resolution, latent=G.w_dim, n_mlp=2, iter=10), "ada_aug_p": 0.0}
    else:
        ckpt = {"g_ema": sd}
        if latent_avg:
            ckpt["latent_avg"] = G.w_avg.clone()
    torch.save(ckpt, path)


# ----------------------------------------------------------------------------------------------- NVIDIA
class _Persistent:
    """An object that pickles the way NVIDIA's persistent classes do."""

    def __init__(self, class_name, state, module_src="raise RuntimeError('must never be executed')\n"):
        self.class_name, self.state, self.module_src = class_name, state, module_src

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=self.class_name,
                    state=self.state)
        return (_fake_reconstruct, (meta,))


def _fake_reconstruct(meta):  # only its qualified name matters; it is replaced by the loader's whitelist
    raise RuntimeError("the fake reconstructor must not run")


class _FakeEasyDict(dict):
    pass


@contextlib.contextmanager
def _fake_nvidia_modules():
    tu, per = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")
    dn, util = types.ModuleType("dnnlib"), types.ModuleType("dnnlib.util")
    per._reconstruct_persistent_obj = _fake_reconstruct
    util.EasyDict = _FakeEasyDict
    _fake_reconstruct.__module__ = "torch_utils.persistence"
    _fake_reconstruct.__qualname__ = "_reconstruct_persistent_obj"
    _FakeEasyDict.__module__, _FakeEasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    saved = {k: sys.modules.get(k) for k in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")}
    sys.modules.update({"torch_utils": tu, "torch_utils.persistence": per, "dnnlib": dn, "dnnlib.util": util})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _module_state(tensors: dict[str, torch.Tensor], prefix: str, children: list[str], params: list[str],
                  buffers: list[str], extra: dict | None = None) -> dict:
    state = {"training": False, "_parameters": OrderedDict(), "_buffers": OrderedDict(), "_modules": OrderedDict()}
    for p in params:
        state["_parameters"][p] = torch.nn.Parameter(tensors[prefix + p].clone(), requires_grad=False)
    for b in buffers:
        state["_buffers"][b] = tensors[prefix + b].clone()
    state.update(extra or {})
    return state


def nvidia_generator_record(G, conv_clamp=None, architecture="skip", c_dim=0, num_fp16_res=0) -> _Persistent:
    """Our generator as an NVIDIA ``training.networks.Generator`` persistent record."""
    sd = {k: v for k, v in G.state_dict().items()}
    filt = torch.tensor([1.0, 3, 3, 1]).outer(torch.tensor([1.0, 3, 3, 1])) / 64

    def layer(prefix, kind):
        p = ["weight", "bias"] + (["noise_strength"] if kind == "conv" else [])
        st = _module_state(sd, prefix, [], p, ["noise_const"] if kind == "conv" else [])
        if kind == "conv":
            st["_buffers"]["resample_filter"] = filt.clone()
        aff = _module_state(sd, prefix + "affine.", [], ["weight", "bias"], [])
        st["_modules"]["affine"] = _Persistent("FullyConnectedLayer", aff)
        return _Persistent(f"{'SynthesisLayer' if kind == 'conv' else 'ToRGBLayer'}", st)

    syn = {"training": False, "_parameters": OrderedDict(), "_buffers": OrderedDict(), "_modules": OrderedDict()}
    s = "synthesis_network."
    for k in range(2, G.synthesis_network.log2 + 1):
        r = 2 ** k
        blk = _empty_state()
        blk["_buffers"]["resample_filter"] = filt.clone()
        if r == 4:
            blk["_parameters"]["const"] = torch.nn.Parameter(sd[s + "const"].clone(), requires_grad=False)
        else:
            blk["_modules"]["conv0"] = layer(f"{s}b{r}.conv0.", "conv")
        blk["_modules"]["conv1"] = layer(f"{s}b{r}.conv1.", "conv")
        blk["_modules"]["torgb"] = layer(f"{s}b{r}.torgb.", "rgb")
        syn["_modules"][f"b{r}"] = _Persistent("SynthesisBlock", blk)
    mp = {"training": False, "_parameters": OrderedDict(), "_modules": OrderedDict(),
          "_buffers": OrderedDict({"w_avg": sd["mapping_network.w_avg"].clone()})}
    for n in range(G.mapping_network.num_layers):
        mp["_modules"][f"fc{n}"] = _Persistent("FullyConnectedLayer",
                                               _module_state(sd, f"mapping_network.fc{n}.", [], ["weight", "bias"], []))
    with _fake_nvidia_modules():
        init_kwargs = _FakeEasyDict(z_dim=G.z_dim, c_dim=c_dim, w_dim=G.w_dim, img_resolution=G.resolution,
                                    img_channels=3,
                                    mapping_kwargs=_FakeEasyDict(num_layers=G.mapping_network.num_layers),
                                    synthesis_kwargs=_FakeEasyDict(channel_base=512, channel_max=32,
                                                                   num_fp16_res=num_fp16_res, conv_clamp=conv_clamp,
                                                                   architecture=architecture))
    top = {"training": False, "_parameters": OrderedDict(), "_buffers": OrderedDict(),
           "_modules": OrderedDict(synthesis=_Persistent("SynthesisNetwork", syn),
                                   mapping=_Persistent("MappingNetwork", mp)),
           "_init_args": (), "_init_kwargs": init_kwargs, "z_dim": G.z_dim, "w_dim": G.w_dim}
    return _Persistent("Generator", top)


def _empty_state() -> dict:
    return {"training": False, "_parameters": OrderedDict(), "_buffers": OrderedDict(), "_modules": OrderedDict()}


def nvidia_discriminator_record(D, mbstd_group_size=4, mbstd_num_channels=1, write_group_size=True) -> _Persistent:
    """Our discriminator as an NVIDIA ``training.networks.Discriminator`` (architecture 'resnet') record.

    The tensors are D's; the minibatch-std settings written into ``init_kwargs['epilogue_kwargs']`` are the
    arguments (``write_group_size=False`` omits the group size, as a pickle relying on NVIDIA's default does)."""
    sd = D.state_dict()
    res0 = D.resolution
    filt = torch.tensor([1.0, 3, 3, 1]).outer(torch.tensor([1.0, 3, 3, 1])) / 64
    top = _empty_state()

    def layer(ours, cls="Conv2dLayer", bias=True, resample=False):
        st = _module_state(sd, ours + ".", [], ["weight"] + (["bias"] if bias else []), [])
        if resample:
            st["_buffers"]["resample_filter"] = filt.clone()
        return _Persistent(cls, st)

    for r in D.block_resolutions:
        blk = _empty_state()
        blk["_buffers"]["resample_filter"] = filt.clone()
        if r == res0:
            blk["_modules"]["fromrgb"] = layer("fromrgb")
        blk["_modules"]["conv0"] = layer(f"b{r}.conv0", resample=True)
        blk["_modules"]["conv1"] = layer(f"b{r}.conv1", resample=True)
        blk["_modules"]["skip"] = layer(f"b{r}.skip", bias=False, resample=True)
        top["_modules"][f"b{r}"] = _Persistent("DiscriminatorBlock", blk)
    epi = _empty_state()
    mb = _empty_state()
    mb.update(group_size=mbstd_group_size, num_channels=mbstd_num_channels)
    epi["_modules"]["mbstd"] = _Persistent("MinibatchStdLayer", mb)
    epi["_modules"]["conv"] = layer("conv")
    epi["_modules"]["fc"] = layer("fc", cls="FullyConnectedLayer")
    epi["_modules"]["out"] = layer("out", cls="FullyConnectedLayer")
    top["_modules"]["b4"] = _Persistent("DiscriminatorEpilogue", epi)
    with _fake_nvidia_modules():
        epi_kw = _FakeEasyDict(mbstd_num_channels=mbstd_num_channels)
        if write_group_size:
            epi_kw["mbstd_group_size"] = mbstd_group_size
        top["_init_args"] = ()
        top["_init_kwargs"] = _FakeEasyDict(c_dim=0, img_resolution=res0, img_channels=3, architecture="resnet",
                                            channel_base=512, channel_max=32, num_fp16_res=0, conv_clamp=None,
                                            block_kwargs=_FakeEasyDict(), mapping_kwargs=_FakeEasyDict(),
                                            epilogue_kwargs=epi_kw)
    return _Persistent("Discriminator", top)


def write_nvidia(G, path, D=None, keys=("G", "D", "G_ema"), module_src=None, d_kwargs=None, **kwargs) -> None:
    """An NVIDIA snapshot ``{G, D, G_ema, augment_pipe, training_set_kwargs}`` of G (and D when given).

    ``keys``: which networks to write (e.g. ``("G",)`` for a pickle without G_ema); ``module_src``: the source text
    stored in every record (e.g. StyleGAN3's); ``d_kwargs``: for :func:`nvidia_discriminator_record`."""
    rec = nvidia_generator_record(G, **kwargs)
    if module_src is not None:
        rec.module_src = module_src
    drec = None if D is None else nvidia_discriminator_record(D, **(d_kwargs or {}))
    with _fake_nvidia_modules():
        nets = dict(G=rec, D=drec, G_ema=rec)
        data = {k: nets[k] for k in keys}
        data.update(augment_pipe=None, training_set_kwargs=_FakeEasyDict(resolution=32))
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=4)


# ----------------------------------------------------------------------------------------------- NVIDIA TF
class _FakeTFNetwork:
    """Pickles like ``dnnlib.tflib.network.Network`` (its ``__getstate__`` dict: version, name, static_kwargs,
    components, build_module_src, build_func_name, variables as (name, numpy array) pairs)."""

    def __init__(self, name, variables, components=None):
        self.state = dict(version=4, name=name, static_kwargs={}, components=components or {},
                          build_module_src="raise RuntimeError('must never be executed')\n",
                          build_func_name=f"{name}_main", variables=variables)

    def __getstate__(self):
        return self.state


def write_tensorflow_pickle(path, protocol: int = 3) -> None:
    """A small (G, D, Gs) tuple of TF ``Network`` objects, as NVIDIA's TF code pickles them (protocol 3 in the
    official files: GLOBAL opcode; protocol 4 writes STACK_GLOBAL)."""
    import numpy as np

    rng = np.random.default_rng(0)
    mapping = _FakeTFNetwork("G_mapping", [("Dense0/weight", rng.standard_normal((8, 8)).astype(np.float32))])
    gs = _FakeTFNetwork("G", [("lod", np.float32(0.0)), ("dlatent_avg", np.zeros(8, np.float32))],
                        components={"mapping": mapping})
    d = _FakeTFNetwork("D", [("Output/weight", rng.standard_normal((8, 1)).astype(np.float32))])
    tflib, net = types.ModuleType("dnnlib.tflib"), types.ModuleType("dnnlib.tflib.network")
    net.Network = _FakeTFNetwork
    saved = {k: sys.modules.get(k) for k in ("dnnlib", "dnnlib.tflib", "dnnlib.tflib.network")}
    old = (_FakeTFNetwork.__module__, _FakeTFNetwork.__qualname__)
    _FakeTFNetwork.__module__, _FakeTFNetwork.__qualname__ = "dnnlib.tflib.network", "Network"
    sys.modules.update({"dnnlib": types.ModuleType("dnnlib"), "dnnlib.tflib": tflib, "dnnlib.tflib.network": net})
    try:
        with open(path, "wb") as f:
            pickle.dump((gs, d, gs), f, protocol=protocol)
    finally:
        _FakeTFNetwork.__module__, _FakeTFNetwork.__qualname__ = old
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
