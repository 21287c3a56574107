// Reading an attack's options object: the attack op (binding/attacks.cc) and each stage of the
// AutoAttack cascade (binding/autoattack.cc).
#pragma once
#include <napi.h>
#include "attacks.h"

namespace fl {

// Reads an attack's complete options object (main thread; lib/options.ts validated it and filled
// the defaults; common keys ERR_INTERNAL when missing, ERR_ARG when mistyped: binding/options.h).
AttackOptions parseAttackOptions(Napi::Value v);

}  // namespace fl
