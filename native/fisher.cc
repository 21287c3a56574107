// fisher: per-sample Fisher information w.r.t. the input; see lib/fisher.ts for the public API.
#include "fisher.h"
#include "capabilities.h"
#include "common/checks.h"
#include "common/errors.h"
#include "common/tensor.h"
#include "common/worker.h"
#include "models/model_wrap.h"

namespace fl {

torch::Tensor logitJacobian(Classifier& m, const torch::Tensor& x0, torch::Tensor* probs) {
  torch::AutoGradMode grad(true);
  torch::Tensor x = x0.detach().clone().requires_grad_(true);
  torch::Tensor z = m.forward(x);  // [B, C]
  const int64_t B = x.size(0), C = z.size(1), D = x.numel() / B;
  if (probs) *probs = torch::softmax(z.detach().to(torch::kFloat64), 1);
  std::vector<torch::Tensor> rows;
  rows.reserve(C);
  for (int64_t c = 0; c < C; ++c) {
    // Σ_b z[b, c]: samples are independent in eval mode, so its gradient is row c of each J_b
    auto g = torch::autograd::grad({z.select(1, c).sum()}, {x}, {}, /*retain_graph=*/c + 1 < C)[0];
    rows.push_back(g.reshape({B, 1, D}));
  }
  return torch::cat(rows, 1);  // [B, C, D]
}

namespace {

// Symmetric PSD square root of M [B, C, C] (float64) by eigendecomposition
torch::Tensor psdSqrt(const torch::Tensor& M) {
  auto [s, U] = torch::linalg::eigh(M, "L");
  return torch::matmul(U * s.clamp_min(0).sqrt().unsqueeze(1), U.transpose(1, 2));
}

}  // namespace

ExactFisher fisherExact(Classifier& m, const torch::Tensor& x, bool wantEigvec) {
  ModeGuard mode(m, /*train=*/false, /*paramsRequireGrad=*/false);
  ExactFisher r;
  torch::Tensor J = logitJacobian(m, x, &r.probs);             // [B, C, D]
  torch::Tensor K = torch::bmm(J, J.transpose(1, 2)).to(torch::kFloat64);  // [B, C, C]
  const torch::Tensor& p = r.probs;                               // [B, C]
  torch::Tensor M = torch::diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1);  // [B, C, C]
  torch::Tensor Mh = psdSqrt(M);
  torch::Tensor A = torch::matmul(torch::matmul(Mh, K), Mh);
  A = 0.5 * (A + A.transpose(1, 2));
  auto [evals, evecs] = torch::linalg::eigh(A, "L");  // ascending
  evals = evals.clamp_min(0);
  r.spectrum = evals.flip({1});
  r.lambdaMax = r.spectrum.select(1, 0).contiguous();
  r.trace = evals.sum(1);
  r.frobenius = evals.pow(2).sum(1).sqrt();
  if (wantEigvec) {
    torch::Tensor w = evecs.select(2, evecs.size(2) - 1);          // [B, C]
    torch::Tensor u = torch::bmm(Mh, w.unsqueeze(2)).to(J.scalar_type());  // [B, C, 1]
    torch::Tensor v = torch::bmm(J.transpose(1, 2), u).squeeze(2);  // [B, D]
    v = v / v.norm(2, 1, true).clamp_min(1e-30);
    r.eigvec = v.reshape(x.sizes()).contiguous();
  }
  return r;
}

namespace {

// fisherExact(model, x, { eigvec?: boolean }, ctl?) -> Promise<{ lambdaMax, trace, frobenius:
// Float64Array [B]; spectrum: Tensor [B, C] float64; probs: Tensor [B, C]; eigvec?: Tensor }>
Napi::Value FisherExactJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "fisherExact(model)");
    torch::Tensor x = unwrapTensor(info[1], "fisherExact(x)");
    bool wantVec = info[2].IsObject() && info[2].As<Napi::Object>().Get("eigvec").ToBoolean().Value();
    return startOp(info.Env(), info[3], [m, x, wantVec](OpContext&) -> Finisher {
      checkImages(x, "fisherExact(x)");
      ExactFisher r = fisherExact(*m, x.to(m->device()), wantVec);
      return [r](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("lambdaMax", toFloat64Array(env, r.lambdaMax));
        o.Set("trace", toFloat64Array(env, r.trace));
        o.Set("frobenius", toFloat64Array(env, r.frobenius));
        o.Set("spectrum", wrapTensor(env, r.spectrum));
        o.Set("probs", wrapTensor(env, r.probs));
        if (r.eigvec.defined()) o.Set("eigvec", wrapTensor(env, r.eigvec));
        return o;
      };
    }, {m->lock});
  });
}

}  // namespace

void InitFisher(Napi::Env env, Napi::Object exports) {
  exports.Set("fisherExact", Napi::Function::New(env, FisherExactJs, "fisherExact"));
}

}  // namespace fl
