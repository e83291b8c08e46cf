// terra/nn/nn.hpp: modules, initializations and the functional API.
#pragma once

#include "terra/nn/attention.hpp"
#include "terra/nn/functional.hpp"
#include "terra/nn/init.hpp"
#include "terra/nn/module.hpp"
#include "terra/nn/modules.hpp"
