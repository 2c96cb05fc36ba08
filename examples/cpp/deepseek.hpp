// deepseek.hpp: a small header-only C++17 RAII wrapper over the C API (include/deepseek.h).
// Handles own their C objects (move-only), and every failing call throws deepseek::Error.
#pragma once

#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "deepseek.h"

namespace deepseek {

/// A failed call: the status code plus the library's message (ds_last_error).
class Error : public std::runtime_error {
  public:
    Error(ds_status status, const std::string &message)
        : std::runtime_error(message), status_(status) {}
    ds_status status() const noexcept { return status_; }

  private:
    ds_status status_;
};

/// Throws if `status` is not DS_OK; copies the message before any other call can replace it.
inline void check(ds_status status) {
    if (status != DS_OK) throw Error(status, ds_last_error());
}

namespace detail {
struct FreeModel {
    void operator()(ds_model *m) const noexcept { ds_model_free(m); }
};
struct FreeSession {
    void operator()(ds_session *s) const noexcept { ds_session_free(s); }
};
}  // namespace detail

/// Receives each text delta (whole UTF-8 characters) and its kind; returns false to stop.
using OnText = std::function<bool(ds_event_kind, std::string_view)>;

/// One turn of a conversation.
struct Message {
    std::string role;  // "system", "user", "assistant" or "tool"
    std::string content;
};

namespace detail {
/// The C callback: calls the std::function, and keeps an exception to rethrow after the C call
/// returns (an exception must never unwind through the library).
struct Callback {
    const OnText *on_text;
    std::exception_ptr error;

    static bool call(void *self, ds_event_kind kind, const char *text, size_t len) noexcept {
        auto *cb = static_cast<Callback *>(self);
        try {
            return !*cb->on_text || (*cb->on_text)(kind, std::string_view(text, len));
        } catch (...) {
            cb->error = std::current_exception();
            return false;
        }
    }

    void finish(ds_status status) const {
        if (error) std::rethrow_exception(error);
        check(status);
    }
};
}  // namespace detail

/// A loaded model: immutable, so one Model can serve sessions on many threads.
class Model {
  public:
    explicit Model(const std::string &path, const ds_model_params &params = ds_model_default_params()) {
        ds_model *m = nullptr;
        check(ds_model_load(path.c_str(), &params, &m));
        model_.reset(m);
    }

    const ds_model *get() const noexcept { return model_.get(); }
    size_t vocab_size() const noexcept { return ds_model_vocab_size(get()); }
    size_t context_length() const noexcept { return ds_model_context_length(get()); }
    ds_token bos_token() const noexcept { return ds_model_bos_token(get()); }
    bool is_eos(ds_token t) const noexcept { return ds_model_is_eos(get(), t); }
    std::vector<ds_token> eos_tokens() const {
        std::vector<ds_token> ids(ds_model_eos_tokens(get(), nullptr, 0));
        ds_model_eos_tokens(get(), ids.data(), ids.size());
        return ids;
    }

    /// Loads tokenizer.json from `dir`, for a checkpoint whose folder has none.
    void load_tokenizer(const std::string &dir) {
        check(ds_model_load_tokenizer(model_.get(), dir.c_str()));
    }
    bool has_tokenizer() const noexcept { return ds_model_has_tokenizer(get()); }

    /// Token ids of `text`; with `add_special`, as a raw prompt (BOS first).
    std::vector<ds_token> tokenize(const std::string &text, bool add_special = true) const {
        size_t n = 0;
        ds_status st = ds_tokenize(get(), text.c_str(), add_special, nullptr, 0, &n);
        if (st != DS_ERR_BUFFER_TOO_SMALL) check(st);
        std::vector<ds_token> ids(n);
        check(ds_tokenize(get(), text.c_str(), add_special, ids.data(), ids.size(), &n));
        return ids;
    }

    /// The text of `ids`, without special tokens if `skip_special`.
    std::string detokenize(const std::vector<ds_token> &ids, bool skip_special = true) const {
        size_t n = 0;
        ds_status st = ds_detokenize(get(), ids.data(), ids.size(), skip_special, nullptr, 0, &n);
        if (st != DS_ERR_BUFFER_TOO_SMALL) check(st);
        std::string text(n + 1, '\0');
        check(ds_detokenize(get(), ids.data(), ids.size(), skip_special, text.data(), text.size(), &n));
        text.resize(n);
        return text;
    }

  private:
    std::unique_ptr<ds_model, detail::FreeModel> model_;
};

/// One conversation. Use it from one thread at a time (the C API reports DS_ERR_SESSION_BUSY
/// otherwise). It keeps the model's weights alive on its own, so it may outlive its Model.
class Session {
  public:
    explicit Session(const Model &model, const ds_session_params &params = ds_session_default_params())
        : logits_(model.vocab_size()) {
        ds_session *s = nullptr;
        check(ds_session_new(model.get(), &params, &s));
        session_.reset(s);
    }

    /// Appends `tokens` to the cache; returns the logits after the last one (valid until the
    /// next eval on this session).
    const std::vector<float> &eval(const std::vector<ds_token> &tokens) {
        check(ds_eval(session_.get(), tokens.data(), tokens.size(), logits_.data(), logits_.size()));
        return logits_;
    }

    /// Continues the raw text `prompt`, passing each delta to `on_text` (may be empty).
    ds_generate_result generate(const std::string &prompt,
                                const ds_generate_params &params = ds_generate_default_params(),
                                const OnText &on_text = {}) {
        detail::Callback cb{&on_text, nullptr};
        ds_generate_result r;
        cb.finish(ds_generate(session_.get(), prompt.c_str(), &params, detail::Callback::call, &cb, &r));
        return r;
    }

    /// Answers `messages` (the whole conversation: the cache keeps what earlier turns share).
    ds_generate_result chat(const std::vector<Message> &messages,
                            const ds_generate_params &params = ds_generate_default_params(),
                            const OnText &on_text = {}) {
        std::vector<ds_message> msgs;
        msgs.reserve(messages.size());
        for (const Message &m : messages) msgs.push_back({m.role.c_str(), m.content.c_str(), nullptr, nullptr});
        detail::Callback cb{&on_text, nullptr};
        ds_generate_result r;
        cb.finish(ds_chat(session_.get(), msgs.data(), msgs.size(), &params, detail::Callback::call, &cb, &r));
        return r;
    }

    size_t size() const noexcept { return ds_session_len(session_.get()); }
    size_t context_length() const noexcept { return ds_session_context_length(session_.get()); }
    void truncate(size_t n) { check(ds_session_truncate(session_.get(), n)); }
    void reset() { check(ds_session_reset(session_.get())); }

  private:
    std::unique_ptr<ds_session, detail::FreeSession> session_;
    std::vector<float> logits_;
};

}  // namespace deepseek
