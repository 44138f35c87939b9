"""The three training loops the benchmark compares, each with `train(steps)` (and `batches(steps)`: the data path
alone).

- `MinisweepLoop`: minisweep's own code path, set up as `train_run` sets it up;
- `BareLoop`: the ceiling, the same model and optimizer on one synthetic batch already on the device;
- `SeedLoop`: the seed-style pipeline, a DataLoader decoding JPEGs with PIL and torchvision transforms."""
from __future__ import annotations
import gc, itertools

import numpy as np
import torch
from torch import nn


def make_cfg(args, model, size, dataset, device, compile=False):
    """The `TrainConfig` every loop of a row is built from: minisweep's defaults, the benchmark's batch size and image
    size."""
    from minisweep.train import TrainConfig
    return TrainConfig(model=model, subset_size=1.0, seed=0, dataset=str(dataset), image_size=size, num_epochs=90,
                       batch_size=args.batch_size, device=str(device), bf16=True, channels_last='auto', compile=compile,
                       cache_on_device=True, progress=False).check()

class MinisweepLoop:
    """minisweep's own code path: `prepare_data`, `create_model`, `make_optimizer` and `train_epoch`, set up as
    `train_run` does."""
    def __init__(self, cfg, device):
        from minisweep.train import prepare_data, run_length, make_optimizer, compile_model
        from minisweep.models import create_model
        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.seed); np.random.seed(cfg.seed)
        self.data = prepare_data(cfg, device)
        length = run_length(self.data['n_train'], cfg)
        model = create_model(cfg.model, len(self.data['classes']), cfg.image_size).to(device)
        if self.data['train'].channels_last: model = model.to(memory_format=torch.channels_last)
        self.opt, self.sched = make_optimizer(model, cfg, length['total_steps'], length['warmup_steps'], device)
        self.crit = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.model = compile_model(model) if cfg.compile else model
        self.n_classes, self.channels_last = len(self.data['classes']), self.data['train'].channels_last
        self._epochs = [0]
        self.stream, self.last = epoch_after_epoch(self.data['train'], cfg.seed, self._epochs), None

    @property
    def epoch(self): return self._epochs[0]

    def train(self, steps):
        from minisweep.train import train_epoch
        from tqdm.auto import tqdm
        with tqdm(total=steps * self.cfg.batch_size, disable=True) as bar:
            self.last = train_epoch(self.model, itertools.islice(self.stream, steps), self.opt, self.sched, self.crit,
                                    self.device, self.cfg.bf16, bar)

    def batches(self, steps):
        "The data path alone: `Batches` cut, moved, cropped, flipped and normalised, no model."
        for x, y, n in itertools.islice(self.stream, steps): pass

def epoch_after_epoch(b, seed: int, epochs: list):
    """The training batches of `b` epoch after epoch (a timed repeat may cross an epoch boundary, as a long run does),
    counting them in `epochs[0]`. A function of its own, not a method: a generator made by a method holds `self`, and
    `self.stream` holding that generator is a reference cycle that keeps a deleted loop's model, optimizer and GPU cache
    alive until the next `gc.collect()`."""
    while True:
        epochs[0] += 1; b.set_epoch(seed, epochs[0])
        yield from b

class BareLoop:
    """The ceiling: the same model, optimizer settings, autocast and memory format on one synthetic batch already on the
    device."""
    def __init__(self, cfg, device, n_classes, channels_last, like: torch.optim.Optimizer):
        from minisweep.models import create_model
        from minisweep.train import autocast
        self.device, self.autocast, self.bf16 = device, autocast, cfg.bf16
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, n_classes, cfg.image_size).to(device)
        mf = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(memory_format=mf)
        # the kernel minisweep's SGD uses
        extra = dict(fused=like.defaults.get('fused'), foreach=like.defaults.get('foreach'))
        self.sgd = 'fused' if extra['fused'] else 'foreach' if extra['foreach'] else 'for-loop'
        self.opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                                   weight_decay=cfg.weight_decay, **extra)
        self.crit = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.model = torch.compile(model, dynamic=False) if cfg.compile else model
        self.x = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size,
                             device=device).contiguous(memory_format=mf)
        self.y = torch.randint(0, n_classes, (cfg.batch_size,), device=device)
        self.last = None

    def step(self, x, y):
        with self.autocast(self.device, self.bf16):
            loss = self.crit(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss

    def train(self, steps):
        self.model.train()
        for _ in range(steps): loss = self.step(self.x, self.y)
        self.last = loss.detach()

class SeedSet(torch.utils.data.Dataset):
    "Seed style: a Hugging Face dataset decoded by PIL on every access, then torchvision transforms."
    def __init__(self, path, image_size):
        import datasets, torchvision.transforms as T
        from minisweep.data import stored_size, IMAGENET_MEAN, IMAGENET_STD
        datasets.logging.set_verbosity_error(); datasets.disable_progress_bars()
        self.ds = datasets.load_dataset(str(path), split='train')
        self.tf = T.Compose([T.Resize(stored_size(image_size)), T.RandomCrop(image_size), T.RandomHorizontalFlip(),
                             T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    def __len__(self): return len(self.ds)
    def __getitem__(self, i):
        ex = self.ds[int(i)]
        return self.tf(ex['image'].convert('RGB')), ex['label']

class SeedLoop:
    """The seed-style pipeline: DataLoader with one worker per core (pinned memory on CUDA), optionally feeding the
    model."""
    def __init__(self, path, cfg, device, bare: BareLoop | None, workers: int):
        self.device, self.bare = device, bare
        self.cl = bare is not None and bare.x.is_contiguous(memory_format=torch.channels_last)
        ds = SeedSet(path, cfg.image_size)
        sampler = torch.utils.data.RandomSampler(ds, num_samples=10**8,
                                                 generator=torch.Generator().manual_seed(cfg.seed))
        self.loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers,
                                                  pin_memory=device.type == 'cuda', drop_last=True,
                                                  persistent_workers=workers > 0)
        self.it = iter(self.loader)

    def _next(self):
        x, y = next(self.it)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.cl: x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def train(self, steps):
        self.bare.model.train()
        for _ in range(steps): loss = self.bare.step(*self._next())
        self.bare.last = loss.detach()

    def batches(self, steps):
        for _ in range(steps): self._next()

    def close(self):
        del self.it, self.loader; gc.collect()
