// fisher: per-sample Fisher information w.r.t. the input (fisher.h): the exact method, the
// matrix-free operator and its iterative methods. The exact method's autotune and per-op profile
// are in fisher_tune.cc, the ops' glue in binding/fisher.cc; lib/fisher.ts is the public API.
#include "fisher.h"
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <exception>
#include <thread>
#include "common/checks.h"
#include "common/errors.h"
#include "models/linear_tape.h"

// OpenMP keeps its thread count per thread; weak so that a LibTorch without OpenMP still links
extern "C" void omp_set_num_threads(int) __attribute__((weak));

namespace fl {

torch::ScalarType modelDtype(Classifier& m) {
  for (auto& p : m.parameters())
    if (p.is_floating_point()) return p.scalar_type();
  return torch::kFloat32;
}

LayoutGuard::LayoutGuard(Classifier& m, bool channelsLast) {
  if (!channelsLast) return;
  torch::NoGradGuard ng;
  for (auto& p : m.parameters()) {
    if (p.dim() != 4) continue;
    params_.push_back(p);
    p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
  }
}

LayoutGuard::~LayoutGuard() {
  torch::NoGradGuard ng;
  for (auto& p : params_) p.set_data(p.data().contiguous());
}

namespace {

const char* const kAutogradAsked = "the autograd option";

// x cast to the model's device and dtype, in the wanted memory format
torch::Tensor prepInput(Classifier& m, const torch::Tensor& x, bool channelsLast) {
  torch::Tensor t = x.to(m.device(), modelDtype(m));
  if (channelsLast && t.dim() == 4) t = t.contiguous(at::MemoryFormat::ChannelsLast);
  return t.detach();
}

// Symmetric PSD square root of M [B, C, C] (float64) by eigendecomposition
torch::Tensor psdSqrt(const torch::Tensor& M) {
  auto [s, U] = at::linalg_eigh(M, "L");
  return torch::matmul(U * s.clamp_min(0).sqrt().unsqueeze(1), U.transpose(1, 2));
}

// Runs fn(k) for k in [0, n) on `streams` threads (round robin), each with its share of the
// intra-op threads; exceptions are rethrown on the caller's thread.
void parallelFor(int64_t n, int streams, const std::function<void(int64_t)>& fn) {
  if (streams <= 1 || n <= 1) {
    for (int64_t k = 0; k < n; ++k) fn(k);
    return;
  }
  streams = static_cast<int>(std::min<int64_t>(streams, n));
  int intra = std::max(1, at::get_num_threads() / streams);
  std::vector<std::exception_ptr> errs(streams);
  std::vector<std::thread> ts;
  for (int s = 0; s < streams; ++s) {
    ts.emplace_back([&, s]() {
      try {
        if (omp_set_num_threads) omp_set_num_threads(intra);  // this thread only
        torch::AutoGradMode grad(true);
        for (int64_t k = s; k < n; k += streams) fn(k);
      } catch (...) {
        errs[s] = std::current_exception();
      }
    });
  }
  for (auto& t : ts) t.join();
  for (auto& e : errs)
    if (e) std::rethrow_exception(e);
}

}  // namespace

ExactFisher fisherExact(Classifier& m, const torch::Tensor& x, bool wantEigvec) {
  FisherOptions o;
  o.channelsLast = true;  // the exact method's default (see fisher.h)
  return fisherExact(m, x, wantEigvec, o);
}

// Recorded in NCHW whatever the layout asked for, then moved to channels-last if asked: ReLU masks
// and max-pool argmax, which the layouts' kernels can round to different winners at near-ties,
// come from the same forward in both layouts.
std::shared_ptr<LinearTape> linearise(Classifier& m, const torch::Tensor& x0, const FisherOptions& o, torch::Tensor* x,
                                      torch::Tensor* z, std::unique_ptr<LayoutGuard>* layout, std::string* why) {
  *x = prepInput(m, x0, false);
  std::shared_ptr<LinearTape> tape = o.autograd ? nullptr : m.linearize(*x, z, why);
  if (o.autograd && why) *why = kAutogradAsked;
  if (tape) return o.channelsLast ? tape->withLayout(at::MemoryFormat::ChannelsLast) : tape;
  *layout = std::make_unique<LayoutGuard>(m, o.channelsLast);
  *x = prepInput(m, x0, o.channelsLast);
  x->requires_grad_(true);
  *z = m.forward(*x);
  return nullptr;
}

torch::Tensor classCotangents(const torch::Tensor& z, int64_t c0, int64_t k) {
  const int64_t B = z.size(0), C = z.size(1);
  torch::Tensor go = torch::zeros({k * B, C}, z.options());
  for (int64_t j = 0; j < k; ++j) {
    torch::Tensor blk = go.narrow(0, j * B, B);
    blk.select(1, c0 + j).fill_(1);
    blk.select(1, C - 1).fill_(-1);
  }
  return go;
}

ExactFisher fisherExact(Classifier& m, const torch::Tensor& x0, bool wantEigvec, const FisherOptions& o) {
  ModeGuard mode(m, /*train=*/false, /*paramsRequireGrad=*/false);
  torch::AutoGradMode gradMode(true);
  ExactFisher r;
  torch::Tensor x, z;  // z: [B, C]
  std::unique_ptr<LayoutGuard> layout;
  // the network's linearisation where the model has one (built-ins): its VJPs are input-only
  // backward passes without autograd's engine; otherwise autograd over a retained graph
  std::shared_ptr<LinearTape> tape = linearise(m, x0, o, &x, &z, &layout, &r.engineReason);
  checkLogits(z.detach(), "fisher");
  const int64_t B = x.size(0), C = z.size(1), D = x.numel() / B;
  r.probs = torch::softmax(z.detach().to(torch::kFloat64), 1);
  r.engine = tape ? "linear" : "autograd";
  const torch::Tensor& p = r.probs;
  auto f64 = p.options();
  if (C < 2) {  // one class: p = 1, G = 0
    r.lambdaMax = torch::zeros({B}, f64);
    r.trace = torch::zeros({B}, f64);
    r.frobenius = torch::zeros({B}, f64);
    r.spectrum = torch::zeros({B, C}, f64);
    if (wantEigvec) r.eigvec = torch::zeros_like(x0);
    return r;
  }
  // G = Jᵀ M J only sees logit differences (M 1 = 0): with z'_c = z_c − z_{C−1} (c < C−1),
  // G = J'ᵀ M' J', M' = diag(p') − p' p'ᵀ, p' = p[:C−1]. C−1 backward passes instead of C,
  // k classes per pass with the linear engine (a [k·B] batch through one VJP).
  const int64_t R = C - 1;
  const int64_t k = tape ? std::max<int64_t>(1, std::min<int64_t>(o.classesPerPass, R)) : 1;
  const int64_t passes = (R + k - 1) / k;
  std::vector<torch::Tensor> rows(passes);
  parallelFor(passes, o.streams, [&](int64_t i) {
    const int64_t c0 = i * k, kk = std::min(k, R - c0);
    torch::Tensor go = classCotangents(z, c0, kk);
    torch::Tensor g = tape ? tape->vjp(go, kk) : torch::autograd::grad({z}, {x}, {go}, /*retain_graph=*/true)[0];
    rows[i] = g.reshape({kk, B, D});
  });
  torch::Tensor J = torch::cat(rows, 0).transpose(0, 1);                // [B, R, D] model dtype (a view)
  rows.clear();
  torch::Tensor Jd = torch::empty({B, R, D}, f64).copy_(J);
  torch::Tensor K = torch::bmm(Jd, Jd.transpose(1, 2));                 // [B, R, R]
  torch::Tensor pr = p.narrow(1, 0, R);
  torch::Tensor M = torch::diag_embed(pr) - pr.unsqueeze(2) * pr.unsqueeze(1);
  torch::Tensor Mh = psdSqrt(M);
  torch::Tensor A = torch::matmul(torch::matmul(Mh, K), Mh);
  A = 0.5 * (A + A.transpose(1, 2));
  auto [evals, evecs] = at::linalg_eigh(A, "L");  // ascending
  evals = evals.clamp_min(0);
  // the C-th eigenvalue of M½ K M½ in the full C-dimensional form is exactly 0
  r.spectrum = torch::cat({evals.flip({1}), torch::zeros({B, 1}, f64)}, 1);
  r.lambdaMax = r.spectrum.select(1, 0).contiguous();
  r.trace = evals.sum(1);
  r.frobenius = evals.pow(2).sum(1).sqrt();
  if (wantEigvec) {
    torch::Tensor w = evecs.select(2, R - 1);                           // [B, R]
    torch::Tensor u = torch::bmm(Mh, w.unsqueeze(2));                   // [B, R, 1]
    torch::Tensor v = torch::bmm(Jd.transpose(1, 2), u).squeeze(2);     // [B, D]
    v = v / v.norm(2, 1, true).clamp_min(1e-300);
    r.eigvec = v.to(x0.scalar_type()).reshape(x0.sizes()).contiguous();
  }
  return r;
}

// ---------------- matrix-free ----------------

FisherOperator::FisherOperator(Classifier& m, const torch::Tensor& x0, const FisherOptions& o) {
  mode_ = std::make_unique<ModeGuard>(m, /*train=*/false, /*paramsRequireGrad=*/false);
  torch::AutoGradMode grad(true);
  tape_ = linearise(m, x0, o, &x_, &z_, &layout_, &why_);
  dt_ = x_.scalar_type();
  shape_ = x_.sizes().vec();
  subShape_ = shape_;
  checkLogits(z_.detach(), "fisher");
  B = x_.size(0);
  C = z_.size(1);
  D = x_.numel() / B;
  torch::Tensor zd = z_.detach().to(torch::kFloat64);
  probs = torch::softmax(zd, 1);
  logp = torch::log_softmax(zd, 1);
}

FisherOperator::~FisherOperator() {
  // free the graph before the guards restore the model's layout and flags
  tape_.reset();
  g_ = torch::Tensor();
  u_ = torch::Tensor();
  z_ = torch::Tensor();
  x_ = torch::Tensor();
  layout_.reset();
  mode_.reset();
}

torch::Tensor FisherOperator::vjp(const torch::Tensor& w) {
  if (tape_) return tape_->vjp(w.to(z_.options())).reshape({B, D}).to(torch::kFloat64);
  torch::AutoGradMode grad(true);
  auto g = torch::autograd::grad({z_}, {x_}, {w.to(z_.options())}, /*retain_graph=*/true)[0];
  return g.reshape({B, D}).to(torch::kFloat64);
}

torch::Tensor FisherOperator::jvp(const torch::Tensor& v) {
  if (tape_) return tape_->jvp(v.to(dt_).reshape(subShape_)).to(torch::kFloat64);
  torch::AutoGradMode grad(true);
  if (!g_.defined()) {
    u_ = torch::zeros_like(z_).requires_grad_(true);
    g_ = torch::autograd::grad({z_}, {x_}, {u_}, /*retain_graph=*/true, /*create_graph=*/true)[0];
  }
  torch::Tensor vv = v.to(dt_).reshape(shape_);
  auto r = torch::autograd::grad({g_}, {u_}, {vv}, /*retain_graph=*/true)[0];
  return r.to(torch::kFloat64);
}

bool FisherOperator::restrict(const torch::Tensor& index) {
  if (!tape_) return false;
  torch::Tensor i = index.to(probs.device(), torch::kInt64);
  tape_ = tape_->subset(i);
  probs = probs.index_select(0, i);
  logp = logp.index_select(0, i);
  z_ = z_.index_select(0, i);
  B = i.size(0);
  subShape_[0] = B;
  return true;
}

torch::Tensor FisherOperator::applyM(const torch::Tensor& w) const {
  return probs * w - probs * (probs * w).sum(1, true);
}

torch::Tensor FisherOperator::gvp(const torch::Tensor& v) { return vjp(applyM(jvp(v))); }

torch::Tensor FisherOperator::quadratic(const torch::Tensor& v) {
  torch::Tensor w = jvp(v);  // [B, C]
  return (probs * w * w).sum(1) - (probs * w).sum(1).pow(2);
}

torch::Tensor FisherOperator::startVector() {
  torch::Tensor e = torch::zeros_like(probs);
  e.scatter_(1, probs.argmax(1, true), 1.0);
  torch::Tensor v = vjp(e - probs);  // [B, D]
  torch::Tensor n = v.norm(2, 1, true);
  torch::Tensor fallback = torch::full_like(v, 1.0 / std::sqrt(static_cast<double>(D)));
  torch::Tensor ok = n > 1e-300;
  return torch::where(ok, v / n.clamp_min(1e-300), fallback);
}

PowerResult fisherPower(FisherOperator& op, double tol, int64_t maxIter, const std::function<void(int64_t)>& onIter) {
  const int64_t B = op.B;
  auto f64 = op.probs.options();
  torch::Tensor v = op.startVector();  // [B, D] unit
  torch::Tensor lam = torch::zeros({B}, f64);
  torch::Tensor done = torch::zeros({B}, f64.dtype(torch::kBool));
  torch::Tensor iters = torch::zeros({B}, f64.dtype(torch::kInt64));
  // the samples the operator currently computes (positions in the batch); all of them until
  // enough have converged to restrict the operator to the rest
  torch::Tensor cur = torch::arange(B, f64.dtype(torch::kInt64));
  for (int64_t it = 1; it <= maxIter; ++it) {
    if (onIter) onIter(it);
    const bool all = cur.size(0) == B;
    torch::Tensor vc = all ? v : v.index_select(0, cur);
    torch::Tensor w = op.gvp(vc);
    torch::Tensor l = (vc * w).sum(1);  // Rayleigh quotient (v unit)
    torch::Tensor n = w.norm(2, 1, true);
    torch::Tensor vn = torch::where(n > 1e-300, w / n.clamp_min(1e-300), vc);
    torch::Tensor doneC = all ? done : done.index_select(0, cur);
    torch::Tensor lamC = all ? lam : lam.index_select(0, cur);
    torch::Tensor itC = all ? iters : iters.index_select(0, cur);
    torch::Tensor active = doneC.logical_not();
    torch::Tensor conv = (l - lamC).abs() <= tol * l.abs();
    if (tol <= 0) conv = torch::zeros_like(conv);  // tol 0: exactly maxIter iterations (benchmarks)
    lam.index_copy_(0, cur, torch::where(active, l, lamC));
    v.index_copy_(0, cur, torch::where(active.unsqueeze(1), vn, vc));
    iters.index_copy_(0, cur, torch::where(active, torch::full_like(itC, it), itC));
    torch::Tensor doneNow = doneC | (active & conv);
    done.index_copy_(0, cur, doneNow);
    torch::Tensor left = doneNow.logical_not().nonzero().squeeze(1);  // positions in cur
    if (left.size(0) == 0) break;
    if (left.size(0) * 4 <= cur.size(0) * 3 && op.restrict(left)) cur = cur.index_select(0, left);
  }
  PowerResult r;
  r.lambdaMax = lam;
  r.iterations = iters;
  r.converged = done;
  r.eigvec = v.reshape(op.inputShape());
  r.engine = op.engine();
  r.engineReason = op.engineReason();
  return r;
}

LanczosResult fisherLanczos(FisherOperator& op, int64_t steps, const std::function<void(int64_t)>& onIter) {
  const int64_t B = op.B;
  steps = std::max<int64_t>(1, std::min(steps, op.D));
  auto f64 = op.probs.options();
  std::vector<torch::Tensor> Q;  // each [B, D]
  torch::Tensor alpha = torch::zeros({B, steps}, f64), beta = torch::zeros({B, steps}, f64);
  torch::Tensor q = op.startVector(), qPrev = torch::zeros_like(q), bPrev = torch::zeros({B, 1}, f64);
  torch::Tensor alive = torch::ones({B, 1}, f64.dtype(torch::kBool));
  torch::Tensor reached = torch::zeros({B}, f64.dtype(torch::kInt64));
  torch::Tensor scale = torch::zeros({B, 1}, f64);
  const double eps = op.D > 0 ? 1e-10 : 0;  // relative breakdown threshold (float64 recurrence)
  for (int64_t k = 0; k < steps; ++k) {
    if (onIter) onIter(k + 1);
    Q.push_back(q);
    reached = torch::where(alive.squeeze(1), torch::full_like(reached, k + 1), reached);
    torch::Tensor w = op.gvp(q);
    torch::Tensor a = (q * w).sum(1, true);
    w = w - a * q - bPrev * qPrev;
    torch::Tensor Qs = torch::stack(Q, 1);  // [B, k+1, D]
    for (int pass = 0; pass < 2; ++pass)  // full reorthogonalisation, twice
      w = w - torch::bmm(Qs.transpose(1, 2), torch::bmm(Qs, w.unsqueeze(2))).squeeze(2);
    torch::Tensor b = w.norm(2, 1, true);
    scale = torch::maximum(scale, a.abs() + b);
    alpha.select(1, k).copy_((a * alive).squeeze(1));
    alive = alive & (b > eps * scale.clamp_min(1e-300));
    b = b * alive;
    if (k + 1 < steps) beta.select(1, k).copy_(b.squeeze(1));
    qPrev = q;
    q = torch::where(alive, w / b.clamp_min(1e-300), torch::zeros_like(w));
    bPrev = b;
    if (!alive.any().item<bool>()) {
      steps = k + 1;
      alpha = alpha.narrow(1, 0, steps);
      beta = beta.narrow(1, 0, steps);
      break;
    }
  }
  const int64_t S = static_cast<int64_t>(Q.size());
  alpha = alpha.narrow(1, 0, S);
  torch::Tensor T = torch::diag_embed(alpha);
  if (S > 1) {
    torch::Tensor off = beta.narrow(1, 0, S - 1);
    T = T + torch::diag_embed(off, 1) + torch::diag_embed(off, -1);
  }
  auto [theta, Svec] = at::linalg_eigh(T, "L");  // ascending
  theta = theta.clamp_min(0);
  LanczosResult r;
  r.ritz = theta.flip({1}).contiguous();
  r.lambdaMax = r.ritz.select(1, 0).contiguous();
  r.trace = theta.sum(1);
  r.frobenius = theta.pow(2).sum(1).sqrt();
  torch::Tensor Qs = torch::stack(Q, 1);                                  // [B, S, D]
  torch::Tensor s = Svec.select(2, S - 1);                                // [B, S]
  torch::Tensor v = torch::bmm(s.unsqueeze(1), Qs).squeeze(1);            // [B, D]
  v = v / v.norm(2, 1, true).clamp_min(1e-300);
  r.eigvec = v.reshape(op.inputShape());
  r.steps = reached;
  return r;
}

HutchinsonResult fisherHutchinson(FisherOperator& op, int64_t probes, uint64_t seed, const std::function<void(int64_t)>& onIter) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto f64 = op.probs.options();
  torch::Tensor R = at::randint(2, {probes, op.D}, gen, torch::TensorOptions().dtype(torch::kFloat64)).mul_(2).sub_(1);
  R = R.to(op.probs.device());
  std::vector<torch::Tensor> tr, fr;
  for (int64_t k = 0; k < probes; ++k) {
    if (onIter) onIter(k + 1);
    torch::Tensor v = R.select(0, k).unsqueeze(0).expand({op.B, op.D});
    torch::Tensor w = op.jvp(v);                  // [B, C]
    torch::Tensor Mw = op.applyM(w);
    tr.push_back((w * Mw).sum(1));                // vᵀ G v
    fr.push_back(op.vjp(Mw).pow(2).sum(1));       // ‖G v‖²
  }
  torch::Tensor T = torch::stack(tr, 1), F = torch::stack(fr, 1);  // [B, P]
  double sq = std::sqrt(static_cast<double>(probes));
  HutchinsonResult r;
  r.trace = T.mean(1);
  r.traceSe = probes > 1 ? T.std(1, /*unbiased=*/true) / sq : torch::full_like(r.trace, INFINITY);
  torch::Tensor f2 = F.mean(1);
  torch::Tensor f2se = probes > 1 ? F.std(1, true) / sq : torch::full_like(f2, INFINITY);
  r.frobenius = f2.clamp_min(0).sqrt();
  r.frobeniusSe = f2se / (2 * r.frobenius.clamp_min(1e-300));  // delta method
  (void)f64;
  return r;
}

torch::Tensor flatDirections(const torch::Tensor& d, const torch::Tensor& x, const char* what) {
  FL_CHECK(d.sizes() == x.sizes(), ERR_SHAPE, what, ": directions must have the shape of x ", shapeOf(x), ", got ", shapeOf(d));
  FL_CHECK(d.is_floating_point(), ERR_DTYPE, what, ": directions must be float32 or float64");
  return d.reshape({d.size(0), -1}).to(torch::kFloat64);
}

}  // namespace fl
