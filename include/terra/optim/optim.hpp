// terra/optim/optim.hpp: optimizers and learning-rate schedules.
#pragma once

#include "terra/optim/adam.hpp"
#include "terra/optim/optimizer.hpp"
#include "terra/optim/scheduler.hpp"
#include "terra/optim/sgd.hpp"
