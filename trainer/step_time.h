#pragma once
// What one training step of a network costs on this machine, measured: the
// speed a plan of epochs is made from before any epoch has run (the final
// training's choice of architecture, pipeline/final_choice.h).
#include "trainer/model.h"
#include "trainer/network.h"
#include "trainer/recipe.h"

namespace minas {

// Median seconds of `steps` training steps of a throwaway copy of `model` at
// the recipe's batch, label smoothing and precision on `backend`, after one
// untimed step (first-run costs), on seeded synthetic images and labels: a
// dense network's step takes the same time whatever the pixels. steps >= 1.
double measure_step_seconds(const Model& model, Backend& backend, const Recipe& recipe,
                            int steps = 3);

}  // namespace minas
