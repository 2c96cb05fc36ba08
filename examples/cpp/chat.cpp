// A turn-based loop over the C++ wrapper (deepseek.hpp): each line of stdin is one turn of
// token ids; the reply is the greedy continuation (up to N tokens, stopping at EOS), printed
// as one line of ids. The session keeps the whole conversation in its cache, so each turn
// only evaluates what is new. (Text in and out comes with the tokenizer and chat template.)
//
//   chat <model-dir> [-n N] < turns.txt
//   Build: c++ -std=c++17 chat.cpp $(pkg-config --cflags --libs deepseek) -o chat
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "deepseek.hpp"

static ds_token argmax(const std::vector<float> &v) {
    return static_cast<ds_token>(std::max_element(v.begin(), v.end()) - v.begin());
}

int main(int argc, char **argv) {
    if (argc < 2 || (argc != 2 && argc != 4) || (argc == 4 && std::strcmp(argv[2], "-n"))) {
        std::cerr << "usage: chat <model-dir> [-n N] < turns\n";
        return 2;
    }
    const size_t max_new = argc == 4 ? std::strtoul(argv[3], nullptr, 10) : 16;
    try {
        deepseek::Model model(argv[1]);
        deepseek::Session session(model);
        std::cerr << "vocab " << model.vocab_size() << ", context " << session.context_length()
                  << "\n";

        std::vector<ds_token> pending;  // the last reply token, not evaluated yet
        std::string line;
        while (std::getline(std::cin, line)) {
            std::istringstream in(line);
            std::vector<ds_token> turn = pending;
            for (unsigned long id; in >> id;) turn.push_back(static_cast<ds_token>(id));
            if (!in.eof()) throw std::runtime_error("not a token id in: " + line);
            if (turn.empty()) continue;

            std::vector<ds_token> reply;
            try {
                ds_token next = argmax(session.eval(turn));
                while (reply.size() < max_new) {
                    reply.push_back(next);
                    if (model.is_eos(next) || reply.size() == max_new) break;
                    next = argmax(session.eval({next}));
                }
            } catch (const deepseek::Error &e) {
                if (e.status() != DS_ERR_CONTEXT_OVERFLOW) throw;
                std::cerr << "context full (" << session.size() << " tokens), starting over\n";
                session.reset();
                reply.clear();
            }
            for (size_t i = 0; i < reply.size(); i++) std::cout << (i ? " " : "") << reply[i];
            std::cout << std::endl;
            pending.assign(reply.empty() ? reply.end() : reply.end() - 1, reply.end());
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
