// terra/backend/cpu/cpu.hpp: every CPU kernel family.
#pragma once

#include "terra/backend/cpu/conv.hpp"
#include "terra/backend/cpu/elementwise.hpp"
#include "terra/backend/cpu/factory.hpp"
#include "terra/backend/cpu/index.hpp"
#include "terra/backend/cpu/linalg.hpp"
#include "terra/backend/cpu/nn.hpp"
#include "terra/backend/cpu/reduce.hpp"
#include "terra/backend/cpu/shape.hpp"
#include "terra/backend/cpu/sort.hpp"
