// A SoapySDR device module for tests: plays a SigMF recording (cf32_le) as an RX stream with
// the semantics of a real driver's readStream, so that edge_daemon/sources/soapysdr.py runs
// through Debian's python3-soapysdr bindings end to end (tests/test_source_soapysdr_e2e.py).
//
//   g++ -std=c++17 -shared -fPIC -O2 -o libSigMFPlayer.so SigMFPlayer.cpp -lSoapySDR
//   SOAPY_SDR_PLUGIN_PATH=<folder of the .so> ... Device("driver=sigmfplay,path=X.sigmf-data,rate=20e6")
//
// Device args: path (the .sigmf-data, complex float32 little-endian), rate (the recording's
// sample rate), pace ("realtime": samples become readable at the sample rate from
// activateStream on, as from an ADC; "fast": all at once), mtu (samples per read at most,
// default 4096), buffer (samples the "driver" holds before it overflows, default 1 << 20).
//
// readStream: returns at most min(numElems, mtu) samples of those readable now; with none
// readable it waits up to timeoutUs and returns SOAPY_SDR_TIMEOUT; after the end of the
// recording it waits timeoutUs and returns SOAPY_SDR_TIMEOUT. Every read is stamped with the
// hardware time of its first sample (SOAPY_SDR_HAS_TIME, timeNs = index * 1e9 / rate). When a
// slow reader lets more than `buffer` samples pile up, the oldest are dropped, that read
// returns SOAPY_SDR_OVERFLOW, and the next read's time stamp shows the gap.
#include <SoapySDR/Device.hpp>
#include <SoapySDR/Errors.hpp>
#include <SoapySDR/Formats.hpp>
#include <SoapySDR/Logger.hpp>
#include <SoapySDR/Registry.hpp>
#include <SoapySDR/Time.hpp>

#include <algorithm>
#include <chrono>
#include <complex>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double arg_double(const SoapySDR::Kwargs &args, const char *key, double fallback) {
    auto it = args.find(key);
    return it == args.end() ? fallback : std::stod(it->second);
}

class SigMFPlayer : public SoapySDR::Device {
  public:
    explicit SigMFPlayer(const SoapySDR::Kwargs &args) {
        auto path = args.find("path");
        if (path == args.end()) throw std::runtime_error("sigmfplay: no path= (a .sigmf-data file)");
        std::ifstream file(path->second, std::ios::binary | std::ios::ate);
        if (!file) throw std::runtime_error("sigmfplay: cannot open " + path->second);
        const auto bytes = static_cast<size_t>(file.tellg());
        if (bytes % sizeof(std::complex<float>) != 0)
            throw std::runtime_error("sigmfplay: " + path->second + " is not whole cf32 samples");
        samples_.resize(bytes / sizeof(std::complex<float>));
        file.seekg(0);
        file.read(reinterpret_cast<char *>(samples_.data()), static_cast<std::streamsize>(bytes));
        rate_ = arg_double(args, "rate", 20e6);
        mtu_ = static_cast<size_t>(arg_double(args, "mtu", 4096));
        buffer_ = static_cast<size_t>(arg_double(args, "buffer", 1 << 20));
        auto pace = args.find("pace");
        realtime_ = pace == args.end() || pace->second != "fast";
    }

    std::string getDriverKey() const override { return "sigmfplay"; }
    std::string getHardwareKey() const override { return "sigmf-recording"; }
    size_t getNumChannels(const int direction) const override { return direction == SOAPY_SDR_RX ? 1 : 0; }

    std::vector<std::string> getStreamFormats(const int, const size_t) const override {
        return {SOAPY_SDR_CF32};
    }
    std::string getNativeStreamFormat(const int, const size_t, double &fullScale) const override {
        fullScale = 1.0;
        return SOAPY_SDR_CF32;
    }

    // tuning: the recording's rate only; frequency and gain are remembered, not applied
    void setSampleRate(const int, const size_t, const double rate) override {
        if (std::abs(rate - rate_) > 1e-6 * rate_)
            SoapySDR::logf(SOAPY_SDR_WARNING, "sigmfplay: rate %g requested, the recording's is %g", rate, rate_);
    }
    double getSampleRate(const int, const size_t) const override { return rate_; }
    std::vector<double> listSampleRates(const int, const size_t) const override { return {rate_}; }
    void setFrequency(const int, const size_t, const double frequency, const SoapySDR::Kwargs &) override {
        frequency_ = frequency;
    }
    double getFrequency(const int, const size_t) const override { return frequency_; }
    bool hasGainMode(const int, const size_t) const override { return true; }
    void setGainMode(const int, const size_t, const bool automatic) override { agc_ = automatic; }
    bool getGainMode(const int, const size_t) const override { return agc_; }
    void setGain(const int, const size_t, const double value) override { gain_ = value; }
    double getGain(const int, const size_t) const override { return gain_; }
    bool hasHardwareTime(const std::string &) const override { return true; }

    SoapySDR::Stream *setupStream(const int direction, const std::string &format,
                                  const std::vector<size_t> &channels, const SoapySDR::Kwargs &) override {
        if (direction != SOAPY_SDR_RX) throw std::runtime_error("sigmfplay: RX only");
        if (format != SOAPY_SDR_CF32) throw std::runtime_error("sigmfplay: format " + format + ", want CF32");
        if (channels.size() > 1 || (channels.size() == 1 && channels[0] != 0))
            throw std::runtime_error("sigmfplay: one channel, 0");
        return reinterpret_cast<SoapySDR::Stream *>(this);
    }
    void closeStream(SoapySDR::Stream *) override { active_ = false; }
    size_t getStreamMTU(SoapySDR::Stream *) const override { return mtu_; }

    int activateStream(SoapySDR::Stream *, const int, const long long, const size_t) override {
        active_ = true;
        started_ = Clock::now();
        return 0;
    }
    int deactivateStream(SoapySDR::Stream *, const int, const long long) override {
        active_ = false;
        return 0;
    }

    int readStream(SoapySDR::Stream *, void *const *buffs, const size_t numElems, int &flags,
                   long long &timeNs, const long timeoutUs) override {
        flags = 0;
        if (!active_) return SOAPY_SDR_STREAM_ERROR;
        const auto deadline = Clock::now() + std::chrono::microseconds(timeoutUs);
        while (true) {
            const size_t produced = produced_now();
            if (produced - next_ > buffer_) {  // the reader fell behind: the oldest are lost
                next_ = produced - buffer_ / 2;
                return SOAPY_SDR_OVERFLOW;
            }
            if (produced > next_) {
                const size_t n = std::min({numElems, mtu_, produced - next_});
                std::memcpy(buffs[0], samples_.data() + next_, n * sizeof(std::complex<float>));
                flags = SOAPY_SDR_HAS_TIME;
                timeNs = SoapySDR::ticksToTimeNs(static_cast<long long>(next_), rate_);
                next_ += n;
                return static_cast<int>(n);
            }
            const auto now = Clock::now();
            if (now >= deadline) return SOAPY_SDR_TIMEOUT;
            std::this_thread::sleep_until(std::min(deadline, now + std::chrono::microseconds(200)));
        }
    }

  private:
    size_t produced_now() const {
        if (!realtime_) return samples_.size();
        const double elapsed = std::chrono::duration<double>(Clock::now() - started_).count();
        return std::min(samples_.size(), static_cast<size_t>(elapsed * rate_));
    }

    std::vector<std::complex<float>> samples_;
    double rate_ = 20e6, frequency_ = 0, gain_ = 0;
    size_t mtu_ = 4096, buffer_ = 1 << 20, next_ = 0;
    bool realtime_ = true, active_ = false, agc_ = false;
    Clock::time_point started_;
};

SoapySDR::KwargsList find_sigmf(const SoapySDR::Kwargs &args) {
    auto driver = args.find("driver");
    if (driver == args.end() || driver->second != "sigmfplay" || args.count("path") == 0) return {};
    SoapySDR::Kwargs found = args;
    found["label"] = "SigMF player: " + args.at("path");
    return {found};
}

SoapySDR::Device *make_sigmf(const SoapySDR::Kwargs &args) { return new SigMFPlayer(args); }

SoapySDR::Registry register_sigmf("sigmfplay", &find_sigmf, &make_sigmf, SOAPY_SDR_ABI_VERSION);

}  // namespace
