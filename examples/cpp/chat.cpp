// A chat over the C++ wrapper (deepseek.hpp): each line of stdin is a user turn; the reply
// streams as it is generated, the reasoning (R1's <think> section) on a "[thinking]" line
// apart from the "[answer]". Each turn sends the whole conversation through the model's chat
// template; the session's cache already holds the earlier turns, so only the new one is
// evaluated (the per-turn stats on stderr show how many prompt tokens were cached).
//
//   chat <model-dir> [--tokenizer DIR] [-n N] [--temperature T] [--seed S] [--system TEXT]
//   Build: c++ -std=c++17 chat.cpp $(pkg-config --cflags --libs deepseek) -o chat
//
// -n: most tokens per reply (default 0: until EOS or the context is full). Sampling follows the
// checkpoint's generation_config.json unless --temperature is given (0: greedy).
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "deepseek.hpp"

namespace {

const char *finish_name(ds_finish_reason r) {
    switch (r) {
        case DS_FINISH_STOP: return "stop";
        case DS_FINISH_LENGTH: return "length";
        case DS_FINISH_CANCELLED: return "cancelled";
        case DS_FINISH_TOOL_CALLS: return "tool_calls";
        case DS_FINISH_NONE: break;
    }
    return "none";
}

/// Prints a reply as it streams: "[thinking] ..." then "[answer] ...", each on its own line.
struct Printer {
    bool thinking = false, answering = false;

    bool operator()(ds_event_kind kind, std::string_view text) {
        if (kind == DS_EVENT_REASONING && !thinking) {
            std::cout << "[thinking] ";
            thinking = true;
        } else if (kind == DS_EVENT_CONTENT && !answering) {
            start_answer();
        }
        std::cout << text << std::flush;
        return true;
    }

    void start_answer() {
        std::cout << (thinking ? "\n" : "") << "[answer] ";
        answering = true;
    }

    void end() {
        if (!answering) start_answer();
        std::cout << std::endl;
    }
};

}  // namespace

int main(int argc, char **argv) {
    const char *usage =
        "usage: chat <model-dir> [--tokenizer DIR] [-n N] [--temperature T] [--seed S] "
        "[--system TEXT] < turns\n";
    if (argc < 2) {
        std::cerr << usage;
        return 2;
    }
    std::string tokenizer, system;
    ds_generate_params params = ds_generate_default_params();
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i], *next = i + 1 < argc ? argv[i + 1] : nullptr;
        if (!next) {
            std::cerr << "missing value after " << arg << "\n" << usage;
            return 2;
        }
        if (!std::strcmp(arg, "--tokenizer")) {
            tokenizer = next;
        } else if (!std::strcmp(arg, "-n")) {
            params.max_tokens = std::strtoul(next, nullptr, 10);
        } else if (!std::strcmp(arg, "--temperature")) {
            params.temperature = std::strtof(next, nullptr);
        } else if (!std::strcmp(arg, "--seed")) {
            params.seed = std::strtoull(next, nullptr, 10);
            params.has_seed = true;
        } else if (!std::strcmp(arg, "--system")) {
            system = next;
        } else {
            std::cerr << "bad argument: " << arg << "\n" << usage;
            return 2;
        }
        i++;
    }
    try {
        deepseek::Model model(argv[1]);
        if (!tokenizer.empty()) model.load_tokenizer(tokenizer);
        deepseek::Session session(model);
        std::cerr << "vocab " << model.vocab_size() << ", context " << session.context_length()
                  << "\n";

        std::vector<deepseek::Message> conversation;
        if (!system.empty()) conversation.push_back({"system", system});
        std::string line;
        int turn = 0;
        while (std::getline(std::cin, line)) {
            if (line.empty()) continue;
            turn++;
            conversation.push_back({"user", line});
            Printer printer;
            std::string answer;
            auto on_text = [&](ds_event_kind kind, std::string_view text) {
                if (kind == DS_EVENT_CONTENT) answer += text;
                return printer(kind, text);
            };
            ds_generate_result r;
            try {
                r = session.chat(conversation, params, on_text);
            } catch (const deepseek::Error &e) {
                // Nothing was generated: forget the conversation and answer the turn alone.
                if (e.status() != DS_ERR_CONTEXT_OVERFLOW || conversation.size() <= 2) throw;
                std::cerr << "context full, starting over\n";
                conversation.erase(conversation.begin() + (system.empty() ? 0 : 1),
                                   conversation.end() - 1);
                r = session.chat(conversation, params, on_text);
            }
            printer.end();
            conversation.push_back({"assistant", answer});
            std::cerr << "turn " << turn << ": " << r.prompt_tokens << " prompt tokens, "
                      << r.cached_tokens << " cached, " << r.completion_tokens << " generated ("
                      << finish_name(r.finish_reason) << "), " << r.decode_tok_s << " tok/s\n";
        }
    } catch (const deepseek::Error &e) {
        std::cerr << "error " << e.status() << " (" << ds_status_str(e.status()) << "): " << e.what()
                  << "\n";
        return 1;
    } catch (const std::exception &e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
