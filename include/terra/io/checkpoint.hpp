// terra/io/checkpoint.hpp: saving and loading named tensors (module state, optimizer state).
//
// File layout (all integers little-endian):
//   "TERRACKP" | u32 format | u32 reserved | u64 header_bytes | header (JSON) |
//   zero padding to 64 | tensor data, each at header.tensors[i].offset (from the data start) |
//   u64 FNV-1a hash of every byte before it
// Writes are atomic: a temporary file in the same folder, flushed and fsync'ed, then renamed
// over the target, so a crash mid-save leaves the previous checkpoint intact. Loads check the
// hash first and then every field, so truncated, corrupted or hostile files give terra::Error.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "terra/nn/module.hpp"
#include "terra/optim/optimizer.hpp"

namespace terra {

using StateDict = std::vector<std::pair<std::string, Tensor>>;

namespace io {

inline constexpr char kMagic[8] = {'T', 'E', 'R', 'R', 'A', 'C', 'K', 'P'};
inline constexpr uint32_t kFormat = 1;
inline constexpr uint64_t kMaxHeader = uint64_t(1) << 30;

inline uint64_t fnv1a(const unsigned char* p, size_t n, uint64_t h = 14695981039346656037ull) {
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

inline void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(char((v >> (8 * i)) & 0xff));
}
inline uint64_t get_u64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(p[i]) << (8 * i);
  return v;
}

inline DType dtype_from_name(const std::string& s, const std::string& path) {
  for (int i = 0; i < kNumDTypes; ++i)
    if (s == dtype_name(DType(i))) return DType(i);
  detail::fail("load", path, ": unknown dtype '", s, "'");
}

// Write bytes to `path` atomically.
inline void write_atomic(const std::string& path, const std::string& bytes) {
  std::random_device rd;
  std::string tmp = path + ".tmp." + std::to_string(getpid()) + "." + std::to_string(rd());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  TERRA_CHECK(fd >= 0, "save", "cannot create ", tmp, ": ", std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      detail::fail("save", "writing ", tmp, " failed: ", std::strerror(e));
    }
    done += size_t(n);
  }
  bool ok = ::fsync(fd) == 0;
  ok = ::close(fd) == 0 && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    detail::fail("save", "cannot write ", path, ": ", std::strerror(e));
  }
  std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/') + 1);
  int dfd = ::open(dir.c_str(), O_RDONLY);
  if (dfd >= 0) {  // make the rename itself durable
    ::fsync(dfd);
    ::close(dfd);
  }
}

// Serialize named tensors and extra JSON metadata.
inline std::string encode(const StateDict& dict, const nlohmann::json& meta) {
  nlohmann::json h;
  h["library"] = "terra";
  h["version"] = version();
  h["meta"] = meta;
  h["tensors"] = nlohmann::json::array();
  uint64_t off = 0;
  std::vector<Tensor> host;
  for (auto& [name, t] : dict) {
    TERRA_CHECK(t.defined(), "save", "tensor '", name, "' is undefined");
    Tensor c = t.device().is_cpu() ? t.contiguous() : t.to(Device::cpu()).contiguous();
    host.push_back(c);
    h["tensors"].push_back({{"name", name}, {"dtype", dtype_name(c.dtype())},
                            {"shape", std::vector<int64_t>(c.shape().begin(), c.shape().end())},
                            {"offset", off}, {"nbytes", c.nbytes()}});
    off += (c.nbytes() + 63) / 64 * 64;
  }
  std::string header = h.dump();
  std::string out(kMagic, 8);
  for (int i = 0; i < 4; ++i) out.push_back(char((kFormat >> (8 * i)) & 0xff));
  out.append(4, '\0');
  put_u64(out, header.size());
  out += header;
  out.append((64 - out.size() % 64) % 64, '\0');
  size_t data_start = out.size();
  out.resize(data_start + off, '\0');
  for (size_t i = 0; i < host.size(); ++i) {
    uint64_t o = h["tensors"][i]["offset"].get<uint64_t>();
    if (host[i].nbytes()) std::memcpy(&out[data_start + o], host[i].raw_data(), host[i].nbytes());
  }
  put_u64(out, fnv1a(reinterpret_cast<const unsigned char*>(out.data()), out.size()));
  return out;
}

struct Decoded {
  StateDict tensors;
  nlohmann::json meta;
};

// Parse and validate a checkpoint file's bytes (path only names it in errors).
inline Decoded decode(const std::string& bytes, const std::string& path) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t n = bytes.size();
  TERRA_CHECK(n >= 32 && std::memcmp(p, kMagic, 8) == 0, "load", path, " is not a terra checkpoint");
  uint64_t stored = get_u64(p + n - 8);
  TERRA_CHECK(fnv1a(p, n - 8) == stored, "load", path, " is corrupted or truncated (checksum mismatch)");
  uint32_t format = uint32_t(get_u64(p + 8) & 0xffffffffu);
  TERRA_CHECK(format == kFormat, "load", path, " has format ", format, "; this build reads ", kFormat);
  uint64_t hlen = get_u64(p + 16);
  TERRA_CHECK(hlen <= kMaxHeader && 24 + hlen <= n - 8, "load", path, ": header length ", hlen, " out of range");
  nlohmann::json h = nlohmann::json::parse(bytes.begin() + 24, bytes.begin() + 24 + int64_t(hlen), nullptr, false);
  TERRA_CHECK(!h.is_discarded() && h.is_object() && h.contains("tensors") && h["tensors"].is_array(),
              "load", path, ": malformed header");
  uint64_t data_start = (24 + hlen + 63) / 64 * 64, data_end = n - 8;
  TERRA_CHECK(data_start <= data_end, "load", path, ": data section missing");
  Decoded d;
  d.meta = h.value("meta", nlohmann::json::object());
  for (const auto& e : h["tensors"]) {
    TERRA_CHECK(e.is_object() && e.contains("name") && e["name"].is_string() && e.contains("dtype") &&
                    e["dtype"].is_string() && e.contains("shape") && e["shape"].is_array() &&
                    e.contains("offset") && e["offset"].is_number_unsigned() && e.contains("nbytes") &&
                    e["nbytes"].is_number_unsigned(),
                "load", path, ": malformed tensor entry");
    std::string name = e["name"];
    DType dt = dtype_from_name(e["dtype"], path);
    Shape shape;
    uint64_t count = 1;
    for (const auto& s : e["shape"]) {
      TERRA_CHECK(s.is_number_integer() && s.get<int64_t>() >= 0 && s.get<int64_t>() < (int64_t(1) << 40),
                  "load", path, ": bad shape for '", name, "'");
      shape.push_back(s.get<int64_t>());
      TERRA_CHECK(count == 0 || uint64_t(shape.back()) <= (uint64_t(1) << 48) / count, "load", path,
                  ": shape of '", name, "' is too large");
      count *= uint64_t(shape.back());
    }
    uint64_t off = e["offset"], nb = e["nbytes"];
    TERRA_CHECK(nb == count * itemsize(dt), "load", path, ": '", name, "' has ", nb, " bytes for shape ",
                shape, " of ", dtype_name(dt));
    TERRA_CHECK(off <= data_end - data_start && nb <= data_end - data_start - off, "load", path,
                ": data of '", name, "' lies outside the file");
    for (auto& [other, t] : d.tensors) TERRA_CHECK(other != name, "load", path, ": duplicate key '", name, "'");
    Tensor t = Tensor::empty(shape, dt, Device::cpu());
    if (nb) std::memcpy(t.raw_data(), p + data_start + off, nb);
    d.tensors.emplace_back(name, t);
  }
  return d;
}

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  TERRA_CHECK(f.good(), "load", "cannot open ", path);
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  TERRA_CHECK(!f.bad(), "load", "error reading ", path);
  return bytes;
}

}  // namespace io

// Save named tensors to `path` (atomically).
inline void save(const StateDict& dict, const std::string& path) { io::write_atomic(path, io::encode(dict, {})); }
// Save a module's parameters and buffers.
inline void save(const nn::Module& m, const std::string& path) { save(m.state_dict(), path); }
// Load named tensors from `path` (validated; CPU tensors).
inline StateDict load_state_dict(const std::string& path) { return io::decode(io::read_file(path), path).tensors; }
// Load into a module in place: keys, shapes and dtypes must match (strict).
inline void load(nn::Module& m, const std::string& path) {
  StateDict d = load_state_dict(path);
  for (auto& [name, t] : m.state_dict()) {
    for (auto& [n2, t2] : d)
      if (n2 == name)
        TERRA_CHECK(t2.dtype() == t.dtype(), "load", path, ": '", name, "' has dtype ", t2.dtype(),
                    " but the module expects ", t.dtype());
  }
  m.load_state_dict(d, true);
}

// Save an optimizer: its state tensors, step counts and learning rates.
inline void save(const optim::Optimizer& opt, const std::string& path) {
  StateDict d;
  nlohmann::json meta;
  meta["kind"] = "optimizer";
  meta["num_params"] = opt.parameters().size();
  meta["steps"] = nlohmann::json::array();
  for (size_t i = 0; i < opt.states().size(); ++i) {
    meta["steps"].push_back(opt.states()[i].step);
    for (auto& [k, t] : opt.states()[i].tensors) d.emplace_back(std::to_string(i) + "." + k, t);
  }
  meta["lr"] = nlohmann::json::array();
  for (size_t g = 0; g < opt.num_groups(); ++g) meta["lr"].push_back(opt.lr(g));
  io::write_atomic(path, io::encode(d, meta));
}
// Restore an optimizer saved by save(opt, path); it must have the same parameters (count and
// shapes). State tensors are copied into existing ones when present (addresses stay valid).
inline void load(optim::Optimizer& opt, const std::string& path) {
  io::Decoded d = io::decode(io::read_file(path), path);
  const auto& m = d.meta;
  auto params = opt.parameters();
  TERRA_CHECK(m.is_object() && m.value("kind", "") == "optimizer" && m.contains("steps") && m["steps"].is_array() &&
                  m.contains("lr") && m["lr"].is_array(),
              "load", path, " is not an optimizer checkpoint");
  TERRA_CHECK(m.value("num_params", size_t(0)) == params.size() && m["steps"].size() <= params.size(), "load", path,
              ": saved for ", m.value("num_params", size_t(0)), " parameters, the optimizer has ", params.size());
  TERRA_CHECK(m["lr"].size() == opt.num_groups(), "load", path, ": saved ", m["lr"].size(),
              " parameter groups, the optimizer has ", opt.num_groups());
  std::vector<optim::ParamState> states(m["steps"].size());
  for (size_t i = 0; i < states.size(); ++i) {
    TERRA_CHECK(m["steps"][i].is_number_integer(), "load", path, ": bad step count");
    states[i].step = m["steps"][i];
  }
  for (auto& [key, t] : d.tensors) {
    size_t dot = key.find('.');
    bool digits = dot != std::string::npos && dot > 0 && dot < 10 &&
                  std::all_of(key.begin(), key.begin() + int64_t(dot), [](char ch) { return ch >= '0' && ch <= '9'; });
    TERRA_CHECK(digits, "load", path, ": bad state key '", key, "'");
    size_t i = std::stoul(key.substr(0, dot));
    TERRA_CHECK(i < states.size() && t.shape() == params[i].shape(), "load", path, ": state '", key,
                "' of shape ", t.shape(), " does not fit parameter ", i);
    states[i].tensors[key.substr(dot + 1)] = t.to(params[i].dtype());
  }
  NoGradGuard no_grad;
  auto& cur = opt.mutable_states();
  if (cur.size() < states.size()) cur.resize(states.size());
  for (size_t i = 0; i < states.size(); ++i) {
    cur[i].step = states[i].step;
    for (auto& [k, t] : states[i].tensors) {
      auto it = cur[i].tensors.find(k);
      if (it != cur[i].tensors.end() && it->second.shape() == t.shape()) it->second.copy_(t);
      else cur[i].tensors[k] = t;
    }
  }
  for (size_t g = 0; g < opt.num_groups(); ++g) opt.set_lr(m["lr"][g].get<double>(), g);
}

}  // namespace terra
